"""`perfbox rollout --tasks tasks.jsonl --out results.jsonl`: a training job's tasks through
the rollout worker's RunTasks, one result line per trajectory as it finishes.

The worker and tool service are embedded (started for the command, on loopback ports, and
reached over real gRPC like remote ones) unless `--worker` / `--server` name running ones.
Progress goes to stderr one line per finished trajectory, so it reads the same on a terminal
and in a log file; results are appended and flushed line by line, so an interrupted run keeps
every finished trajectory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from perfbox.api.v1 import rollout_pb2 as rpb


def read_tasks(path: Path) -> list[rpb.Task]:
    """The task lines of a JSONL file (blank lines and `#` comments skipped); errors name the
    line."""
    from perfbox.inference.tasks import TaskFormatError, proto_from_json

    if not path.is_file():
        raise ValueError(f"--tasks {path}: no such file")
    tasks = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON: {e}") from None
        try:
            tasks.append(proto_from_json(data, number))
        except TaskFormatError as e:
            raise ValueError(f"{path}: {e}") from None
    if not tasks:
        raise ValueError(f"{path} holds no task")
    return tasks


def result_line(message: rpb.TaskTrajectory) -> dict[str, Any]:
    """The result-line contract: task_id, sample, prompt_ids, response_ids, response_mask,
    logprobs, turns, finish_reason, reward {total, ...breakdown}."""
    line: dict[str, Any] = {
        "task_id": message.task_id, "sample": message.sample,
        "prompt_ids": list(message.prompt_ids), "response_ids": list(message.response_ids),
        "response_mask": list(message.response_mask),
        "logprobs": [round(x, 6) for x in message.logprobs],
        "turns": [{"tool": t.tool, "arguments": json.loads(t.arguments_json or "{}"),
                   "status": t.status, "inserted_text": t.inserted_text,
                   "tool_s": round(t.tool_s, 3), "speculative_hit": t.speculative_hit}
                  for t in message.turns],
        "finish_reason": message.finish_reason, "response_text": message.response_text,
        "wall_s": round(message.wall_s, 3)}
    if message.has_reward:
        line["reward"] = {"total": message.reward.total,
                          **json.loads(message.reward.breakdown_json or "{}")}
    return line


@contextlib.contextmanager
def embedded_worker(tool_target: str, threads: int, model: str | None, kv_slots: int
                    ) -> Iterator[str]:
    """A rollout worker on the embedded engine on a free loopback port, its tasks' tools from
    tool_target."""
    from perfbox.client import ToolClient
    from perfbox.inference.engines import DEFAULT_ENGINE
    from perfbox.inference.rollout_backends import make_backend, make_task_driver
    from perfbox.inference.task_service import TaskRunner
    from perfbox.inference.workload_tools import ToolBridge
    from perfbox.inference.workload import load
    from perfbox.inference.rollout_server import create_worker

    client = ToolClient(tool_target, timeout_s=600)
    backend = make_backend(DEFAULT_ENGINE, model, ToolBridge(client, load().problems).run,
                           threads)
    tasks = TaskRunner(None, client, make_driver=make_task_driver(DEFAULT_ENGINE, model, backend,
                                                                  kv_slots, threads))
    server, port, _ = create_worker(backend, "127.0.0.1:0", tasks=tasks)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=5).wait()
        tasks.close()
        client.close()


def stream_tasks(worker: str, request: rpb.TasksRequest, out: TextIO,
                 progress: TextIO = sys.stderr) -> int:
    """Sends the request; writes each finished trajectory's line to out; returns how many."""
    import grpc

    from perfbox.api.v1 import rollout_pb2_grpc

    total = sum(max(1, t.group_size) for t in request.tasks)
    done, started = 0, time.monotonic()
    tokens: dict[str, int] = {}
    from perfbox.api import MAX_MESSAGE_BYTES

    with grpc.insecure_channel(worker, options=[("grpc.max_receive_message_length",
                                                 MAX_MESSAGE_BYTES)]) as channel:
        stub = rollout_pb2_grpc.RolloutServiceStub(channel)
        for event in stub.RunTasks(request):
            kind = event.WhichOneof("event")
            if kind == "tokens" and not event.tokens.inserted:
                tokens[event.trajectory_id] = (tokens.get(event.trajectory_id, 0)
                                               + len(event.tokens.token_ids))
            elif kind == "result":
                done += 1
                line = result_line(event.result)
                out.write(json.dumps(line) + "\n")
                out.flush()
                reward = (f", reward {line['reward']['total']:.3f}" if "reward" in line
                          else "")
                print(f"[{done}/{total}] {event.trajectory_id}: {line['finish_reason']}, "
                      f"{sum(line['response_mask'])} tokens sampled, {len(line['turns'])} "
                      f"tool calls{reward} ({time.monotonic() - started:.0f} s)",
                      file=progress, flush=True)
            elif kind == "summary":
                s = event.summary
                print(f"done: {done} trajectories in {s.wall_s:.1f} s, {s.tokens_per_s:.1f} "
                      f"tokens/s, speculation {s.spec_hits} hits / {s.spec_misses} misses",
                      file=progress, flush=True)
    return done


def run_tasks(args: argparse.Namespace) -> int:
    from perfbox.cli.common import service_target
    from perfbox.cli.rollout import engine_check, engine_threads

    tasks = read_tasks(Path(args.tasks))
    request = rpb.TasksRequest(tasks=tasks, mode=(args.mode or ["resident+speculate"])[-1],
                               parser=args.parser)
    out_path = Path(args.out)
    with contextlib.ExitStack() as stack:
        worker = args.worker
        if not worker:
            engine_check()
            target = stack.enter_context(service_target(args, ("torch",), workers=2,
                                                        nice=args.tool_nice))
            print("starting the embedded rollout worker...", file=sys.stderr, flush=True)
            worker = stack.enter_context(embedded_worker(
                target, engine_threads(args), args.model, args.kv_slots or 8))
        print(f"{len(tasks)} tasks, {sum(max(1, t.group_size) for t in tasks)} trajectories "
              f"-> {out_path}", file=sys.stderr, flush=True)
        with out_path.open("w") as out:
            stream_tasks(worker, request, out)
    return 0
