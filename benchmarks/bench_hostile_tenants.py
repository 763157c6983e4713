"""Hostile tenants: do honest callers keep getting correct answers while others attack the service?

(Over 400 lines because each attack's source is written out here, where a reader of the
figures can see exactly what ran.)

One real bubblewrap-backed server (2 worker slots) in this process. For --seconds, honest
clients compile small kernels in a loop (a CUDA kernel and a Triton kernel, alternating, half of
them no_cache so they really run) while hostile clients cycle through attacks, each a Triton
module whose top-level code attacks (the compile tool imports it inside the sandbox):

  wedge        os.kill(1, ...) with SIGTERM, SIGSEGV, SIGINT, SIGUSR1, then a 2 s busy loop
  frame_bomb   a forged OK outcome frame written to every fd 3..1023, 2 MB of non-ASCII output
  poison       the honest CUDA source under the tightest file limit, cache allowed: a failure
               under tight limits must never be served to an honest caller from the cache
  memory       64 MiB steps up to 3 GiB under a 512 MiB memory limit
  fork_bomb    fork until EAGAIN under max_processes = 32 (the children sleep)
  daemon       a setsid double-forked child sleeping 600 s; the module then returns

Afterwards: no job process may be left; the honest requests (cache allowed) must still come
back right; after the server stops, no sandbox-uid process, perfbox cgroup, perfbox mount or
runtime directory may be left. Records honest success rate, p50/p99 latency and calls/s, each
attack's statuses, forged results (must be 0) and the leftovers (must be empty) in JSON; exits
non-zero on any wrong honest answer, any forged result or anything left behind.

    python benchmarks/bench_hostile_tenants.py [--seconds 60] [--honest 2] [--hostile 2]
        [--no-cgroups] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import run_conditions  # noqa: E402

import grpc  # noqa: E402

from perfbox.api.v1 import tools_pb2 as pb  # noqa: E402
from perfbox.client import ToolClient  # noqa: E402
from perfbox.sandbox.config import ServerConfig  # noqa: E402
from perfbox.sandbox.server import create_server  # noqa: E402
from tests.conftest import (TRITON_KERNEL, cuda_request, has_bwrap,  # noqa: E402
                            job_processes, sandbox_processes, triton_request)

CALL_TIMEOUT_S = 120.0
EXPECTED_KERNEL = {"cuda": "scale", "triton": "copy_kernel"}  # in the conftest sources

ATTACKS: dict[str, str] = {
    "wedge": """
import os, signal, time
for sig in (signal.SIGTERM, signal.SIGSEGV, signal.SIGINT, signal.SIGUSR1):
    try:
        os.kill(1, sig)
        print("SENT", int(sig))
    except OSError as e:
        print("DENIED", int(sig), e.errno)
end = time.monotonic() + 2.0
while time.monotonic() < end:
    pass
""",
    "frame_bomb": r"""
import json, os, struct
body = json.dumps({"type": "outcome", "outcome": {"status": "OK", "summary": "FORGED",
                   "report": {"kernels": [{"name": "copy_kernel"}]}, "error": ""}}).encode()
frame = struct.pack(">I", len(body)) + body
reached = 0
for fd in range(3, 1024):
    try:
        os.write(fd, frame)
        reached += 1
    except OSError:
        pass
print("REACHED", reached)
print("\u00e9\u4e2d\U0001f600" * (2_000_000 // 9), flush=True)
""",
    "memory": """
blocks = []
for _ in range((3 << 30) // (64 << 20)):
    blocks.append(bytearray(b"\\x01") * (64 << 20))
print("ALLOCATED", len(blocks) * 64, "MiB")
""",
    "fork_bomb": """
import os, time
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as e:
        print("FORK STOPPED", children, e.errno)
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    children += 1
""",
    "daemon": """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
print("DAEMONIZED")
""",
}
ATTACK_ORDER = ["wedge", "frame_bomb", "poison", "memory", "fork_bomb", "daemon"]


def conditions() -> dict:
    """Commit, versions, machine and load (benchmarks/run_conditions.py)."""
    return run_conditions.conditions(("perfbox", "grpcio", "torch", "triton"))

def honest_request(kind: str, no_cache: bool) -> pb.ToolRequest:
    return (cuda_request if kind == "cuda" else triton_request)(no_cache=no_cache)


def attack_request(attack: str) -> pb.ToolRequest:
    if attack == "poison":
        request = cuda_request()  # cache allowed: this is the would-be poison
        request.limits.max_file_bytes = 1 << 20  # the server's minimum
        return request
    request = triton_request(TRITON_KERNEL + "\n" + ATTACKS[attack], no_cache=True)
    if attack == "memory":
        request.limits.memory_bytes = 512 << 20
    elif attack == "fork_bomb":
        request.limits.max_processes = 32
    return request


def is_correct(kind: str, result: pb.ToolResult) -> bool:
    if result.status != pb.OK or result.WhichOneof("report") != "compile":
        return False
    want = EXPECTED_KERNEL[kind]
    return any(want in k.name or want in k.demangled for k in result.compile.kernels)


def call(client: ToolClient, request: pb.ToolRequest) -> tuple[str, pb.ToolResult | None, float]:
    """(status name, result or None, client-side wall seconds); an RPC error's code counts as
    its status."""
    started = time.perf_counter()
    try:
        result = client.run(request, timeout_s=CALL_TIMEOUT_S)
        return pb.Status.Name(result.status), result, time.perf_counter() - started
    except grpc.RpcError as e:
        return f"RPC_{e.code().name}", None, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1 and len(chain) < 64:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def is_ours(pid: int, runtime_dir: Path) -> bool:
    """Whether a sandbox-uid process belongs to this server rather than to another perfbox on
    the same machine (they share the uids): it descends from this process, or its mount
    namespace holds a bind from this server's runtime directory (its /etc, also inherited by a
    job's escaped daemons after the server has gone)."""
    if os.getpid() in _ancestors(pid):
        return True
    try:
        return runtime_dir.name in Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False


def split_processes(found: list[tuple[int, int, str]], runtime_dir: Path
                    ) -> tuple[list[list[Any]], list[list[Any]]]:
    """(this server's, other perfbox runs') processes among `found`."""
    ours = [[*p] for p in found if is_ours(p[0], runtime_dir)]
    return ours, [[*p] for p in found if [*p] not in ours]


def wait_no_job_processes_of(runtime_dir: Path, timeout_s: float = 30.0) -> list[list[Any]]:
    """conftest's wait_no_job_processes, counting only this server's job processes (another
    perfbox's jobs may run on the same machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ours, _ = split_processes(job_processes(), runtime_dir)
        if not ours or time.monotonic() > deadline:
            return ours
        time.sleep(0.1)


def cgroup_leftovers() -> list[str]:
    """perfbox-* cgroup directories: v2 anywhere under /sys/fs/cgroup, v1 under the memory and
    pids hierarchies."""
    root = Path("/sys/fs/cgroup")
    roots = [root] if (root / "cgroup.controllers").exists() else [root / "memory",
                                                                     root / "pids"]
    found: list[str] = []
    for r in roots:
        if r.exists():
            out = subprocess.run(["find", str(r), "-maxdepth", "6", "-name", "perfbox-*"],
                                 capture_output=True, text=True).stdout
            found += out.split()
    return found


def mount_leftovers() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "perfbox" in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--honest", type=int, default=2, help="honest client threads")
    parser.add_argument("--hostile", type=int, default=2, help="hostile client threads")
    parser.add_argument("--no-cgroups", action="store_true",
                        help="no cgroups: the memory watchdog and RLIMIT_NPROC enforce limits")
    parser.add_argument("--out", help="default: benchmarks/results/hostile_tenants[_nocgroups]"
                        ".json")
    args = parser.parse_args()
    if not has_bwrap():
        print("bubblewrap is not installed", file=sys.stderr)
        return 2
    suffix = "_nocgroups" if args.no_cgroups else ""
    out_path = Path(args.out or REPO / "benchmarks" / "results" / f"hostile_tenants{suffix}.json")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    # Step 1: conditions; one real bwrap server in this process (its own result cache)
    before = conditions()
    cache_dir = Path(tempfile.mkdtemp(prefix="hostile-tenants-cache-"))
    config = ServerConfig(address="127.0.0.1:0", workers=2, cache_dir=cache_dir, grace_s=5)
    config.use_cgroups = not args.no_cgroups
    server, port = create_server(config)
    runtime_dir = server.runtime_dir
    cgroup_name = server.cgroups.name if server.cgroups is not None else None
    target = f"127.0.0.1:{port}"
    print(f"server on port {port} ({'no cgroups: memory watchdog' if args.no_cgroups else 'cgroups' if server.cgroups and server.cgroups.available else 'no cgroup available'}); "
          f"{args.honest} honest + {args.hostile} hostile clients for {args.seconds:.0f} s",
          flush=True)
    lock = threading.Lock()
    stop = threading.Event()
    honest: list[dict[str, Any]] = []
    hostile: list[dict[str, Any]] = []
    errors: list[str] = []
    final_checks: list[dict[str, Any]] = []
    try:
        # Step 2: honest clients, CUDA and Triton alternating, every other pair no_cache
        def honest_client(index: int) -> None:
            try:
                with ToolClient(target, timeout_s=CALL_TIMEOUT_S) as client:
                    i = index
                    while not stop.is_set():
                        kind = ("cuda", "triton")[i % 2]
                        no_cache = (i // 2) % 2 == 0
                        status, result, seconds = call(client, honest_request(kind, no_cache))
                        row = {"kind": kind, "no_cache": no_cache, "status": status,
                               "seconds": seconds,
                               "correct": result is not None and is_correct(kind, result),
                               "cache_hit": bool(result and result.cache_hit)}
                        if not row["correct"]:
                            row["error"] = (result.error if result else "")[:300]
                        with lock:
                            honest.append(row)
                        i += 1
            except Exception as e:  # a broken client thread is a failed run, not a hang
                with lock:
                    errors.append(f"honest client {index}: {type(e).__name__}: {e}")

        # Step 3: hostile clients, each cycling through the attacks from its own offset
        def hostile_client(index: int) -> None:
            try:
                with ToolClient(target, timeout_s=CALL_TIMEOUT_S) as client:
                    i = index * (len(ATTACK_ORDER) // max(1, args.hostile))
                    while not stop.is_set():
                        attack = ATTACK_ORDER[i % len(ATTACK_ORDER)]
                        status, result, seconds = call(client, attack_request(attack))
                        with lock:
                            hostile.append({
                                "attack": attack, "status": status, "seconds": seconds,
                                "forged": result is not None and "FORGED" in result.summary,
                                "error": (result.error if result else "")[:300]})
                        i += 1
            except Exception as e:
                with lock:
                    errors.append(f"hostile client {index}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=honest_client, args=(n,), name=f"honest-{n}")
                   for n in range(args.honest)]
        threads += [threading.Thread(target=hostile_client, args=(n,), name=f"hostile-{n}")
                    for n in range(args.hostile)]
        started = time.monotonic()
        for t in threads:
            t.start()
        stop.wait(args.seconds)

        # Step 4: stop the clients (each finishes its call in flight), wait out job processes
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        left_jobs = wait_no_job_processes_of(runtime_dir)

        # ... then the cache must not serve an honest caller wrongly
        with ToolClient(target, timeout_s=CALL_TIMEOUT_S) as client:
            for kind in ("cuda", "triton"):
                status, result, seconds = call(client, honest_request(kind, no_cache=False))
                final_checks.append({
                    "kind": kind, "status": status, "seconds": seconds,
                    "cache_hit": bool(result and result.cache_hit),
                    "correct": result is not None and is_correct(kind, result),
                    "error": (result.error if result else "")[:300]})
    finally:
        stop.set()
        server.stop(grace_s=5)
        shutil.rmtree(cache_dir, ignore_errors=True)

    # ... and nothing may be left once the server has stopped
    time.sleep(0.5)  # processes the kill reached are reaped by init
    processes, other_processes = split_processes(
        sandbox_processes() if os.geteuid() == 0 else [], runtime_dir)
    cgroups = cgroup_leftovers()
    ours_cgroup = [c for c in cgroups if cgroup_name and Path(c).name == cgroup_name]
    leftovers = {
        "job_processes_before_stop": left_jobs,
        "sandbox_processes": processes,
        "cgroups": ours_cgroup,
        "mounts": mount_leftovers(),
        "runtime_dirs": [str(runtime_dir)] if runtime_dir.exists() else [],
    }
    # the same uids and cgroup name prefix are used by any other perfbox on this machine (a
    # test run beside this one, or one killed before it could clean up): recorded, not ours
    others = {"sandbox_processes": other_processes,
              "cgroups": [c for c in cgroups if c not in ours_cgroup]}
    after_load = list(os.getloadavg())

    # Step 5: figures, table, results file
    latencies = [r["seconds"] for r in honest]
    correct = sum(r["correct"] for r in honest)
    by_attack: dict[str, dict[str, int]] = {a: {} for a in ATTACK_ORDER}
    for row in hostile:
        counts = Counter(by_attack[row["attack"]])
        counts[row["status"]] += 1
        by_attack[row["attack"]] = dict(sorted(counts.items()))
    forged = sum(r["forged"] for r in hostile)
    examples: dict[str, dict[str, str]] = {}  # one error text per attack and status
    for row in hostile:
        examples.setdefault(row["attack"], {}).setdefault(row["status"], row["error"])
    honest_by_kind = {
        f"{kind}{'_no_cache' if nc else '_cache_allowed'}": {
            "calls": len(rows), "correct": sum(r["correct"] for r in rows),
            "p50_ms": percentile([r["seconds"] for r in rows], 50) * 1e3,
            "p99_ms": percentile([r["seconds"] for r in rows], 99) * 1e3}
        for kind in ("cuda", "triton") for nc in (True, False)
        for rows in [[r for r in honest if r["kind"] == kind and r["no_cache"] == nc]]}
    wrong = [r for r in honest if not r["correct"]]
    final_ok = len(final_checks) == 2 and all(c["correct"] for c in final_checks)
    left = {k: v for k, v in leftovers.items() if v}
    failed = bool(wrong or forged or left or errors or not final_ok or not honest)

    print(f"\nhonest: {correct}/{len(honest)} correct, p50 {percentile(latencies, 50) * 1e3:.0f} "
          f"ms, p99 {percentile(latencies, 99) * 1e3:.0f} ms, "
          f"{len(honest) / elapsed:.2f} calls/s over {elapsed:.1f} s")
    print(f"{'honest call':<22} {'calls':>5} {'correct':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in honest_by_kind.items():
        print(f"{name:<22} {row['calls']:>5} {row['correct']:>7} {row['p50_ms']:>8.0f} "
              f"{row['p99_ms']:>8.0f}")
    print(f"{'attack':<12} {'calls':>5}  statuses")
    for attack, counts in by_attack.items():
        print(f"{attack:<12} {sum(counts.values()):>5}  "
              + ", ".join(f"{s} {n}" for s, n in counts.items()))
    print(f"forged results: {forged}")
    for c in final_checks:
        print(f"after the run, {c['kind']} (cache allowed): {c['status']}, "
              f"{'correct' if c['correct'] else 'WRONG'}, cache hit {c['cache_hit']}")
    print(f"leftovers: {json.dumps(left) if left else 'none'}")
    if any(others.values()):
        print(f"not this server's (another perfbox on this machine): "
              f"{len(others['sandbox_processes'])} sandbox-uid processes, "
              f"{len(others['cgroups'])} perfbox-* cgroups")
    for e in errors:
        print(f"client error: {e}")
    for r in wrong[:10]:
        print(f"wrong honest call: {r['kind']} no_cache={r['no_cache']} {r['status']} "
              f"{r.get('error', '')[:200]}")

    result = {
        "command": " ".join(["python", "benchmarks/bench_hostile_tenants.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "conditions": {**before, "load_avg_after": after_load,
                       "note": "shared 2-core VM (clients, server and jobs on the same cores; "
                               "other work may run beside it): latency and throughput figures "
                               "are indicative, the correctness figures are not",
                       "seconds": args.seconds, "elapsed_s": round(elapsed, 1),
                       "honest_clients": args.honest, "hostile_clients": args.hostile,
                       "workers": config.workers, "use_cgroups": config.use_cgroups,
                       "backend": config.backend},
        "honest": {"calls": len(honest), "correct": correct,
                   "success_rate": correct / len(honest) if honest else 0.0,
                   "p50_ms": percentile(latencies, 50) * 1e3,
                   "p99_ms": percentile(latencies, 99) * 1e3,
                   "calls_per_s": len(honest) / elapsed if elapsed else 0.0,
                   "by_kind": honest_by_kind,
                   "statuses": dict(Counter(r["status"] for r in honest)),
                   "wrong": wrong[:50]},
        "hostile": {"calls": len(hostile), "by_attack": by_attack,
                    "p50_ms_by_attack": {a: percentile([r["seconds"] for r in hostile
                                                        if r["attack"] == a], 50) * 1e3
                                         for a in ATTACK_ORDER},
                    "error_examples": examples},
        "forged": forged,
        "after_run_cache_check": final_checks,
        "leftovers": leftovers,
        "server_cgroup": cgroup_name,
        "other_perfbox_on_machine": others,
        "client_errors": errors,
        "passed": not failed,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out_path}; {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
