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
from perfbox.tools import gpu_timing
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench",)
SAMPLE_TARGET_S = 0.005  # one sample lasts about this long
MAX_CALLS_PER_SAMPLE = 100_000
WARMUP_CALLS = 3
DEFAULTS = {"target_rel_error": 0.01, "time_budget_s": 5.0, "min_samples": 10}
POOL_SIZE = 4  # input sets on the GPU path
BATCH_TARGET_US = 10_000.0  # a timed batch of calls lasts about this long (GPU path)
GPU_MIN_TIME_S = 0.5  # GPU path: sample at least this long before the stop rule applies, as
# NVBench does: a kernel with little noise would otherwise stop after a handful of samples
# whose median still moves by a percent
MAX_BATCH = 200
VERIFY_ONE_IN = 4  # after a batch, the last timed output is checked with this odds
GAP_SLACK_US = 30.0  # tool-clock time per call beyond the events, over the reference's


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    if language not in LANGUAGES:
        raise ToolInputError(f"bench takes language kernelbench; got {language or 'none'}")
    kb._names(files, options)
    if not 0 < float(options.get("target_rel_error") or 0.01) < 1:
        raise ToolInputError("target_rel_error must be between 0 and 1")
    if not 0 < float(options.get("time_budget_s") or 5.0) <= 600:
        raise ToolInputError("time_budget_s must be in (0, 600]")
    kb.check_device_and_launch(options)


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def serve_timed_runs(conn: Connection, model: Any, device: str, timer: Any = None) -> None:
    """In a forked side (submission or reference): hold a pool of input sets, run on command.

    Commands: a pickled pool (list of input lists) replaces the pool; ``run:N`` runs forward N
    times on set 0 then synchronises (the tool times the round trip: CPU path); ``out:J`` sends
    the output for set J; ``timed:`` + set indices times one call per index with the CUDA
    timer (a fresh clone of the set each call, cloned outside the timed region) and answers the
    event and host times; ``last`` sends the output of the last timed call."""
    import torch

    pool: list[list[Any]] = [[]]
    last: Any = None

    def fresh(j: int) -> list[Any]:
        return [x.clone() if isinstance(x, torch.Tensor) else x for x in pool[j]]

    while True:
        message = conn.recv_bytes(kb._MAX_MESSAGE_BYTES)
        if message == b"done":
            return
        if message.startswith(b"run:"):
            with torch.no_grad():
                for _ in range(int(message[4:])):
                    model(*pool[0])
            if device == "cuda":
                torch.cuda.synchronize()  # the whole device: side streams count
            conn.send_bytes(b"ok")
        elif message.startswith(b"out:"):
            with torch.no_grad():
                out = model(*fresh(int(message[4:])))
            if device == "cuda":
                torch.cuda.synchronize()
            conn.send_bytes(kb._dumps([kb._plain(t) for t in kb._flatten(out)]))
        elif message.startswith(b"timed:") and timer is not None:
            times = []
            for j in message[6:]:
                args = fresh(j)
                event_us, host_us, last = timer.time_call(lambda a=args: model(*a))
                times.append((event_us, host_us))
            conn.send_bytes(gpu_timing.pack_times(times))
        elif message == b"flush_bytes" and timer is not None:
            conn.send_bytes(b"%d" % timer.flush_bytes)
        elif message == b"last":
            conn.send_bytes(kb._dumps([kb._plain(t) for t in kb._flatten(last)]))
        else:
            pool = [[x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
                    for inputs in kb._loads(message)]
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
            timer = gpu_timing.CudaTimer() if device == "cuda" else None
            torch.manual_seed(init_seed)
            model = ref.Model(*init_inputs).to(device)
            serve_timed_runs(child_end, model, device, timer)
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


def _stop_rule(stats: dict[str, dict[str, Any]], options: dict[str, Any], started: float,
               min_time_s: float) -> tuple[bool, bool]:
    """(converged, stop): stop once both sides have min_samples and min_time_s of sampling
    and their relative errors are below target (converged), or the budget is spent."""
    elapsed = time.monotonic() - started
    budget = float(options["time_budget_s"])
    enough = min(s["num_samples"] for s in stats.values()) >= int(options["min_samples"]) \
        and elapsed >= min(min_time_s, budget)
    if enough and all(s["rel_error"] < float(options["target_rel_error"])
                      for s in stats.values()):
        return True, True
    return False, enough and elapsed > budget


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
                                  "mode": "bench",
                                  **kb.launch_request(request.options, reference)}))
        ready, why = kb._receive(sub)
        if ready is None:
            return _failed(kb.build_failure_status(why), f"ModelNew failed to build: {why}",
                           device)
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

    # 1. the input pool (one set on the CPU path, several on the GPU path, drawn at random
    # per timed call so an output cached per input cannot be served), and a wrong kernel is
    # never timed
    pool_size = POOL_SIZE if device == "cuda" else 1
    pool = []
    for _ in range(pool_size):
        torch.manual_seed(secrets.randbits(63))
        pool.append([x.cpu() if isinstance(x, torch.Tensor) else x for x in ref.get_inputs()])
    message = kb._dumps(pool)
    for conn in (sub, refc):
        _ask(conn, message)
    expected = []
    for j in range(pool_size):
        expected.append(kb._loads(_ask(refc, b"out:%d" % j)))
        wrong = _wrong_output(expected[j], kb._loads(_ask(sub, b"out:%d" % j)), j)
        if wrong:
            return _failed(Status.WRONG_ANSWER, f"not timed: {wrong}", device)
    if device == "cuda":
        return _bench_cuda(sub, refc, expected, options)
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
        converged, stop = _stop_rule(stats, options, started, 0.0)
        if stop:
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
    word = kb.failure_word(status)
    return ToolOutcome(status, f"{word}: {reason}", {"device": device}, error=reason)


def _wrong_output(expected: list[Any], got: list[Any], input_set: int) -> str:
    """Why `got` is not the reference's output, or "" when it is."""
    if len(got) != len(expected):
        return "ModelNew returns a different number of outputs"
    for index, (e, g) in enumerate(zip(expected, got)):
        entry = kb._compare(e, g, kb.DEFAULT_TOLERANCES, input_set, index)
        if not entry["passed"]:
            return kb._describe(entry)
    return ""


def _timed_batch(conn: Connection, indices: bytes) -> tuple[list[tuple[float, float]], float]:
    """One batch on the GPU path: the side's (event us, host us) per call and the tool's own
    clock for the whole batch, in microseconds."""
    start = time.perf_counter_ns()
    reply = _ask(conn, b"timed:" + indices)
    tool_us = (time.perf_counter_ns() - start) / 1e3
    try:
        pairs = gpu_timing.unpack_times(reply)
    except ValueError as e:
        raise SideFailed("answered a timed batch with something other than times") from e
    if len(pairs) != len(indices) or not all(math.isfinite(x) and x >= 0
                                             for pair in pairs for x in pair):
        raise SideFailed("answered a timed batch with malformed times")
    return pairs, tool_us


def _bench_cuda(sub: Connection, refc: Connection, expected: list[list[Any]],
                options: dict[str, Any]) -> ToolOutcome:
    """GPU path: per-call CUDA-event times (L2 flushed before each call, the device idle
    before and after), batches of the two sides alternated, the order flipped every round;
    the tool's clock checks every batch; a random sample of timed outputs is verified."""
    sides = {"submission": sub, "reference": refc}
    flush_bytes = int(_ask(refc, b"flush_bytes"))  # the reference's process is ours
    monitor = gpu_timing.GpuMonitor()
    try:
        monitor.sample()
        # warm-up, and a batch size so that a batch lasts BATCH_TARGET_US
        host = []
        for conn in sides.values():
            pairs, _ = _timed_batch(conn, bytes(3))
            host += [h for _, h in pairs]
        batch = max(1, min(MAX_BATCH, round(BATCH_TARGET_US / max(statistics.median(host), 1.0))))
        events: dict[str, list[float]] = {n: [] for n in sides}
        gaps: dict[str, list[float]] = {n: [] for n in sides}
        verified = 0
        started = time.monotonic()
        converged = False
        for round_no in range(1_000_000):
            order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
            for name in order:
                indices = bytes(secrets.randbelow(len(expected)) for _ in range(batch))
                pairs, tool_us = _timed_batch(sides[name], indices)
                events[name] += [e for e, _ in pairs]
                gaps[name].append((tool_us - sum(e for e, _ in pairs)) / batch)
                if name == "submission" and (round_no == 0 or
                                             secrets.randbelow(VERIFY_ONE_IN) == 0):
                    wrong = _wrong_output(expected[indices[-1]], kb._loads(_ask(sub, b"last")),
                                          indices[-1])
                    if wrong:
                        return _failed(Status.WRONG_ANSWER, "a timed call returned a wrong "
                                       f"output (cached or stale result?): {wrong}", "cuda")
                    verified += 1
            monitor.sample()
            stats = {n: _stats([e / 1e6 for e in v], 1) for n, v in events.items()}
            converged, stop = _stop_rule(stats, options, started, GPU_MIN_TIME_S)
            if stop:
                break
        for conn in sides.values():
            conn.send_bytes(b"done")
    finally:
        monitor.close()
    gap = {n: statistics.median(v) for n, v in gaps.items()}
    median_sub = stats["submission"]["median_us"]
    if gap["submission"] - gap["reference"] > max(0.5 * median_sub, GAP_SLACK_US):
        return _failed(Status.RUNTIME_ERROR, "work outside the timed region: the CUDA events "
                       f"saw {median_sub:.1f} us per call but the device stayed busy (or the "
                       f"reply was held) {gap['submission'] - gap['reference']:.1f} us longer "
                       "per call than for the reference (work left on a side stream or "
                       "thread, or forged timings)", "cuda")
    speedup = stats["reference"]["median_us"] / median_sub
    conditions = monitor.conditions
    report = {"submission": stats["submission"], "reference": stats["reference"],
              "speedup": speedup, "device": "cuda", "clock": "cuda-events",
              "converged": converged, "budget_used_s": time.monotonic() - started,
              "gpu": conditions.to_json(), "l2FlushBytes": flush_bytes, "verifiedOutputs": verified,
              "toolGapUs": gap["submission"], "referenceGapUs": gap["reference"]}
    summary = (f"{speedup:.2f}x the reference: {median_sub:.2f} us vs "
               f"{stats['reference']['median_us']:.2f} us per call (median of "
               f"{stats['submission']['num_samples']} CUDA-event-timed calls, L2 flushed before "
               f"each; rel. error {100 * stats['submission']['rel_error']:.2f}%).")
    if not converged:
        summary += " The relative-error target was not reached within the time budget."
    if conditions.throttled:
        summary += (" Warning: the GPU was throttled while timing ("
                    f"{', '.join(conditions.throttle_reasons)}); treat the figures with care.")
    return ToolOutcome(Status.OK, summary, report)
