"""The bench tool: how fast is a KernelBench `ModelNew` against the reference `Model`?

The clock is the tool's own, in the tool's process: the submission runs in a forked process
(as in check) and is asked to run its forward N times on inputs it already holds, then to
synchronise the device and answer; the tool times that round trip. Nothing the submission does
to `time`, `torch.cuda.synchronize` or the statistics code can reach the tool's clock. The
reference runs the same way in a process of its own, and the two are sampled alternately so
drift of the machine (clocks, other load) falls on both. Sampling goes on until the relative
standard error of both means is below a target or a time budget is spent (NVBench-style); a
sample holds enough calls to last a few milliseconds, so the round trip costs under 1%.
Before timing, one output of each side is compared: a wrong kernel is never timed.
"""

from __future__ import annotations

import math
import os
import secrets
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from perfbox.tools import check as kb
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench",)
SAMPLE_TARGET_S = 0.005  # one sample lasts about this long
MAX_CALLS_PER_SAMPLE = 100_000
WARMUP_CALLS = 3
DEFAULTS = {"target_rel_error": 0.01, "time_budget_s": 5.0, "min_samples": 10}


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    if language not in LANGUAGES:
        raise ToolInputError(f"bench takes language kernelbench; got {language or 'none'}")
    kb._names(files, options)
    if not 0 < float(options.get("target_rel_error") or 0.01) < 1:
        raise ToolInputError("target_rel_error must be between 0 and 1")
    if not 0 < float(options.get("time_budget_s") or 5.0) <= 600:
        raise ToolInputError("time_budget_s must be in (0, 600]")
    if str(options.get("device", "")) not in ("", "cpu", "cuda"):
        raise ToolInputError("device must be cpu, cuda or empty (automatic)")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def serve_timed_runs(conn: Connection, model: Any, device: str) -> None:
    """In a forked side (submission or reference): hold the inputs, run on command."""
    import torch

    inputs: list[Any] = []
    while True:
        message = conn.recv_bytes(kb._MAX_MESSAGE_BYTES)
        if message == b"done":
            return
        if message.startswith(b"run:"):
            with torch.no_grad():
                for _ in range(int(message[4:])):
                    model(*inputs)
            if device == "cuda":
                torch.cuda.synchronize()  # the whole device: side streams count
            conn.send_bytes(b"ok")
        elif message == b"out":
            with torch.no_grad():
                out = model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
            conn.send_bytes(kb._dumps([kb._plain(t) for t in kb._flatten(out)]))
        else:
            inputs = [x.to(device) if isinstance(x, torch.Tensor) else x
                      for x in kb._loads(message)]
            conn.send_bytes(b"ok")


def _start_reference(ref: Any, init_seed: int, init_inputs: list[Any], device: str
                     ) -> tuple[int, Connection]:
    import torch

    parent_end, child_end = kb._pipe_pair()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            parent_end.close()
            torch.manual_seed(init_seed)
            model = ref.Model(*init_inputs).to(device)
            serve_timed_runs(child_end, model, device)
        except BaseException:  # noqa: BLE001 - the tool reports the missing answer
            code = 1
        os._exit(code)
    child_end.close()
    return pid, parent_end


class SideFailed(RuntimeError):
    """A side stopped answering or answered something else."""


def _ask(conn: Connection, message: bytes) -> bytes:
    conn.send_bytes(message)
    try:
        reply = conn.recv_bytes(kb._MAX_MESSAGE_BYTES)
    except (EOFError, OSError) as e:
        raise SideFailed("its process exited") from e
    if reply.startswith(b"error:"):
        raise SideFailed(reply[6:].decode(errors="replace").strip().splitlines()[-1])
    return reply


def _round_trip_s(conn: Connection, calls: int) -> float:
    start = time.perf_counter_ns()
    if _ask(conn, b"run:%d" % calls) != b"ok":
        raise SideFailed("answered something other than ok")
    return (time.perf_counter_ns() - start) / 1e9


def _time_calls(conn: Connection, calls: int, overhead_s: float) -> float:
    """Seconds per call over one sample, on the tool's clock, less the empty round trip."""
    return max(0.0, _round_trip_s(conn, calls) - overhead_s) / calls


def _size_sample(conn: Connection, overhead_s: float) -> int:
    """Calls per sample so a sample lasts SAMPLE_TARGET_S (two rounds: the first estimate is
    dominated by the round trip)."""
    calls = 1
    for _ in range(2):
        per_call = min(_time_calls(conn, calls, overhead_s) for _ in range(WARMUP_CALLS))
        calls = max(1, min(MAX_CALLS_PER_SAMPLE, round(SAMPLE_TARGET_S / max(per_call, 1e-9))))
    return calls


def _stats(samples: list[float], calls: int) -> dict[str, Any]:
    quartiles = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    mean = statistics.fmean(samples)
    stderr = statistics.stdev(samples) / math.sqrt(len(samples)) if len(samples) > 1 else mean
    return {"median_us": statistics.median(samples) * 1e6, "mean_us": mean * 1e6,
            "min_us": min(samples) * 1e6, "iqr_us": (quartiles[2] - quartiles[0]) * 1e6,
            "rel_error": stderr / mean if mean else 0.0, "num_samples": len(samples),
            "calls_per_sample": calls}


def run(request: ToolRequest) -> ToolOutcome:
    reference, submission = kb._names(request.files, request.options)
    options = {**DEFAULTS, **{k: v for k, v in request.options.items() if v}}
    device, refusal = kb.choose_device("bench", options)
    if refusal is not None:
        return refusal
    ref = kb.import_reference(request.workdir, reference, "perfbox_reference",
                              ("Model", "get_inputs", "get_init_inputs"), "KernelBench format")
    kb._set_dumpable(False)
    sub_pid, sub = kb._start_submission(request.workdir, submission, device, ())
    pids, conns = [sub_pid], [sub]
    try:
        init_seed = secrets.randbits(31)
        init_inputs = list(ref.get_init_inputs())
        sub.send_bytes(kb._dumps({"init_seed": init_seed, "init_inputs": init_inputs,
                                  "mode": "bench"}))
        ready, why = kb._receive(sub)
        if ready is None:
            return _failed(Status.RUNTIME_ERROR, f"ModelNew failed to build: {why}", device)
        ref_pid, refc = _start_reference(ref, init_seed, init_inputs, device)
        pids.append(ref_pid)
        conns.append(refc)
        return _bench(ref, sub, refc, device, options)
    except SideFailed as e:
        return _failed(Status.RUNTIME_ERROR, f"a benchmarked side failed: {e}", device)
    finally:
        for pid, conn in zip(pids, conns):
            kb.stop_side(pid, conn)


def _bench(ref: Any, sub: Connection, refc: Connection, device: str, options: dict[str, Any]
           ) -> ToolOutcome:
    import torch

    torch.manual_seed(secrets.randbits(63))
    inputs = kb._dumps([x.cpu() if isinstance(x, torch.Tensor) else x for x in ref.get_inputs()])
    for conn in (sub, refc):
        _ask(conn, inputs)
    # 1. a wrong kernel is never timed
    expected = kb._loads(_ask(refc, b"out"))
    got = kb._loads(_ask(sub, b"out"))
    if len(got) != len(expected):
        return _failed(Status.WRONG_ANSWER, "ModelNew returns a different number of outputs",
                       device)
    for index, (e, g) in enumerate(zip(expected, got)):
        entry = kb._compare(e, g, kb.DEFAULT_TOLERANCES, 0, index)
        if not entry["passed"]:
            return _failed(Status.WRONG_ANSWER, f"not timed: {kb._describe(entry)}", device)
    # 2. the cost of an empty round trip (subtracted from every sample), warm-up, and calls
    # per sample so that a sample lasts SAMPLE_TARGET_S
    overhead = {n: min(_round_trip_s(c, 0) for _ in range(10))
                for n, c in (("submission", sub), ("reference", refc))}
    calls = {n: _size_sample(c, overhead[n]) for n, c in (("submission", sub),
                                                           ("reference", refc))}
    # 3. alternate samples until both relative errors are below target, or the budget is spent
    samples: dict[str, list[float]] = {"submission": [], "reference": []}
    started = time.monotonic()
    converged = False
    while True:
        for name, conn in (("submission", sub), ("reference", refc)):
            samples[name].append(_time_calls(conn, calls[name], overhead[name]))
        stats = {n: _stats(s, calls[n]) for n, s in samples.items()}
        enough = min(len(s) for s in samples.values()) >= int(options["min_samples"])
        if enough and all(s["rel_error"] < float(options["target_rel_error"])
                          for s in stats.values()):
            converged = True
            break
        if time.monotonic() - started > float(options["time_budget_s"]) and enough:
            break
    for conn in (sub, refc):
        conn.send_bytes(b"done")
    speedup = stats["reference"]["median_us"] / stats["submission"]["median_us"]
    report = {"submission": stats["submission"], "reference": stats["reference"],
              "speedup": speedup, "device": device, "clock": "monotonic",
              "converged": converged, "budget_used_s": time.monotonic() - started}
    summary = (f"{speedup:.2f}x the reference: {stats['submission']['median_us']:.1f} us vs "
               f"{stats['reference']['median_us']:.1f} us per call (median, {device}, "
               f"{stats['submission']['num_samples']} samples, rel. error "
               f"{100 * stats['submission']['rel_error']:.1f}%).")
    if not converged:
        summary += " The relative-error target was not reached within the time budget."
    return ToolOutcome(Status.OK, summary, report)


def _failed(status: Status, reason: str, device: str) -> ToolOutcome:
    word = "Wrong answer" if status == Status.WRONG_ANSWER else "Runtime error"
    return ToolOutcome(status, f"{word}: {reason}", {"device": device}, error=reason)
