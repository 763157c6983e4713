"""What the RunTasks service path costs over driving the same engine directly.

A batch of client tasks (free generation, GRPO groups of 4) runs two ways, side by side in one
process, repetitions alternating which goes first:
- `service`: a rollout worker on a real port (perfbox.inference.rollout_server with a TaskRunner),
  the batch sent as one RunTasks call over gRPC, results streamed back with their token ids,
  masks and log-probs;
- `direct`: the same engine class, the same KV slots and threads, the same trajectories,
  driven in-process by perfbox.inference.rollout in `resubmit` style (what a framework does
  with an engine it owns: no service, no serialisation, no streaming).
Both generate the same tokens (greedy draws or seeded samples are batch-independent), so the
throughput ratio is the service path's overhead. Target: service / direct >= 0.95.

    python benchmarks/bench_task_service.py --out benchmarks/results/task_service.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_conditions import conditions  # noqa: E402

QUESTIONS = ["Explain what a CUDA warp is.", "How does shared memory speed up a matrix multiply?",
             "What limits the occupancy of a GPU kernel?", "Why fuse an elementwise kernel?"]


def task_lines(tokens: int, group_size: int) -> list[dict[str, Any]]:
    return [{"id": f"q{k}", "messages": [{"role": "user", "content": q}],
             "sampling": {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": tokens,
                          "max_turns": 1, "seed": k}, "group_size": group_size}
            for k, q in enumerate(QUESTIONS)]


def run_service(stub: Any, request: Any) -> tuple[float, int, list[list[int]]]:
    started = time.perf_counter()
    sampled, outputs = 0, []
    for event in stub.RunTasks(request, timeout=1800):
        if event.WhichOneof("event") == "result":
            sampled += sum(event.result.response_mask)
            outputs.append(list(event.result.response_ids))
    return time.perf_counter() - started, sampled, sorted(outputs)


def run_direct(engine: Any, runner: Any, request: Any) -> tuple[float, int, list[list[int]]]:
    from perfbox.inference.rollout import Rollout
    from perfbox.inference.rollout_types import Mode, RolloutConfig

    _, trajectories, _ = runner.prepare(request)  # the same prompts and sampling
    started = time.perf_counter()
    stats = Rollout(engine, lambda call: None, RolloutConfig(mode=Mode.RESUBMIT, forced=False),
                    template=runner.chat).run(trajectories)
    wall = time.perf_counter() - started
    outputs = sorted(r.response_ids for r in stats.results)
    return wall, sum(sum(r.response_mask) for r in stats.results), outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per trajectory")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--kv-slots", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: idle cores)")
    parser.add_argument("--out", default="benchmarks/results/task_service.json")
    args = parser.parse_args()

    import grpc

    from perfbox.api.v1 import rollout_pb2 as rpb
    from perfbox.api.v1 import rollout_pb2_grpc
    from perfbox.cli import embedded_server
    from perfbox.client import ToolClient
    from perfbox.inference.engines.llama_cpp import LlamaCppEngine, default_model_path, free_cores
    from perfbox.inference.rollout_backends import StepBackend
    from perfbox.inference.task_service import TaskRunner
    from perfbox.inference.tasks import proto_from_json
    from perfbox.inference.rollout_server import create_worker

    threads = args.threads or free_cores()
    before = conditions(("perfbox", "torch", "llama_cpp_python", "grpcio"))
    model = default_model_path()
    request = rpb.TasksRequest(tasks=[proto_from_json(t) for t in
                                      task_lines(args.tokens, args.group_size)],
                               mode="resubmit")

    def engine() -> LlamaCppEngine:
        return LlamaCppEngine(num_slots=args.kv_slots, threads=threads)

    runs: list[dict[str, Any]] = []
    with embedded_server("bwrap", (), 1) as target, ToolClient(target) as client:
        runner = TaskRunner(engine, client, max_live=256)
        server, port, _ = create_worker(StepBackend(lambda s: engine(), lambda c: None),
                                        tasks=runner)
        direct_engine = engine()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rollout_pb2_grpc.RolloutServiceStub(channel)
            warm = rpb.TasksRequest(tasks=request.tasks[:1], mode="resubmit")
            run_service(stub, warm)
            run_direct(direct_engine, runner, warm)
            for rep in range(args.repetitions):
                order = ["service", "direct"] if rep % 2 == 0 else ["direct", "service"]
                row: dict[str, Any] = {"repetition": rep, "order": order}
                for path in order:
                    wall, sampled, outputs = (run_service(stub, request) if path == "service"
                                              else run_direct(direct_engine, runner, request))
                    row[path] = {"wall_s": round(wall, 3), "sampled_tokens": sampled,
                                 "tokens_per_s": round(sampled / wall, 2)}
                    row.setdefault("outputs", []).append(outputs)
                    print(f"rep {rep} {path}: {sampled} tokens in {wall:.2f} s "
                          f"({sampled / wall:.1f} tokens/s)", flush=True)
                row["same_tokens"] = row["outputs"][0] == row["outputs"][1]
                del row["outputs"]
                row["ratio"] = round(row["service"]["tokens_per_s"]
                                     / row["direct"]["tokens_per_s"], 4)
                runs.append(row)
        server.stop(0)
        runner.close()
        direct_engine.close()
    ratios = [r["ratio"] for r in runs]
    result = {
        "command": "python benchmarks/bench_task_service.py " + " ".join(sys.argv[1:]),
        "conditions": {**before, "load_avg_after": list(__import__("os").getloadavg()),
                       "model": model.name,
                       "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                       "engine_threads": threads, "kv_slots": args.kv_slots},
        "workload": {"tasks": len(QUESTIONS), "group_size": args.group_size,
                     "trajectories": len(QUESTIONS) * args.group_size,
                     "max_new_tokens": args.tokens, "temperature": 0.7, "top_p": 0.95},
        "runs": runs,
        "service_over_direct": {"median": statistics.median(ratios), "min": min(ratios),
                                "max": max(ratios)},
        "same_tokens_every_repetition": all(r["same_tokens"] for r in runs),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"service / direct tokens/s: median {result['service_over_direct']['median']:.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}) over {len(runs)} repetitions; "
          f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
