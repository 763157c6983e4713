"""The TRL adapter inside TRL's own GRPOTrainer (tiny random model, CPU), and the GRPO example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import required_module

trl = required_module("trl", "PERFBOX_REQUIRE_TRL")
REPO = Path(__file__).resolve().parents[2]
REFERENCE = (REPO / "tests" / "fixtures" / "kernelbench" / "reference.py").read_text()
HONEST = (REPO / "tests" / "fixtures" / "kernelbench" / "new.py").read_text()


def test_grpo_trainer_takes_the_environment_and_routes_its_tool_calls(server, tmp_path) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    import grpo_trl
    from datasets import Dataset

    from perfbox.integrations.trl import CallStats, perfbox_environment

    _, port = server
    model, tokenizer, _ = grpo_trl.load_policy(tiny=True, seed=0)
    stats = CallStats()
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "write ModelNew"}],
                               "reference": REFERENCE}] * 2)
    args = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                          num_generations=2, max_completion_length=8, report_to=[],
                          use_cpu=True, save_strategy="no")
    trainer = trl.GRPOTrainer(model=model, args=args, train_dataset=rows,
                              processing_class=tokenizer,
                              environment_factory=perfbox_environment(f"127.0.0.1:{port}",
                                                                      stats=stats))
    # TRL read the tools from the environment's signatures and docstrings; the methods'
    # catch-all for unexpected arguments is not part of what the model is shown
    from transformers.utils import get_json_schema

    names = {t.__name__ for t in trainer.tools}
    assert {"check", "bench", "compile"} <= names
    check_schema = get_json_schema(trainer.tools[[t.__name__ for t in trainer.tools]
                                                 .index("check")])
    assert list(check_schema["function"]["parameters"]["properties"]) == ["submission"]
    # and scores rollouts with the environment's reward
    assert "PerfboxEnvironment" in trainer.reward_func_names
    # a tool call as TRL's loop makes it (a pooled instance, reset with the row, then the
    # parsed arguments as keyword arguments) reaches the service and returns its result
    env = trainer._environment_pool[None][0]
    env.reset(**rows[0])
    tool = trainer.tools[[t.__name__ for t in trainer.tools].index("check")]
    import asyncio

    text = asyncio.run(tool.__func__(env, submission=HONEST))
    assert text.startswith("OK: ") and stats.take()[1]["OK"] == 1
    assert env.get_reward() > 0


def test_grpo_example_tiny_prints_reward_per_step(server, tmp_path) -> None:
    _, port = server
    log = tmp_path / "grpo.log"
    out = subprocess.run([sys.executable, str(REPO / "examples" / "grpo_trl.py"), "--tiny",
                          "--steps", "1", "--generations", "2", "--max-completion-length", "16",
                          "--server", f"127.0.0.1:{port}", "--log", str(log),
                          "--out", str(tmp_path / "run.json")],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [x for x in out.stdout.splitlines() if x.startswith("step ")]
    assert len(lines) == 1 and "reward" in lines[0], out.stdout
    assert log.read_text().splitlines() == lines  # the terminal and the log alike
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["model"].startswith("tiny-random") and len(record["steps"]) == 1
    assert record["conditions"]["cpus"] and record["conditions"]["trl"]
