"""`perfbox demo`: the README's main job on one machine, no GPU needed."""

from __future__ import annotations

import argparse
import os
from typing import Any

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.cli.common import (add_service_flags, connect, console, err_console, print_json,
                                service_target)
from perfbox.cli.render import print_result, run_with_progress
from perfbox.exit_codes import ExitCode


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: a tool service, the bundled kernels through it, and the rollout
    worker replaying a kernel-agent trajectory against it."""
    from perfbox.client import make_request, read_files
    from perfbox.samples import SOFTMAX_PY, VECTOR_ADD_CU

    requests = [
        make_request("compile", read_files([VECTOR_ADD_CU]), request_id="demo-cuda-compile",
                     archs=args.arch or ["sm_90"]),
        make_request("disasm", read_files([VECTOR_ADD_CU]), request_id="demo-cuda-disasm",
                     archs=args.arch or ["sm_90"]),
        make_request("compile", read_files([SOFTMAX_PY]), request_id="demo-triton-compile",
                     archs=args.arch or ["sm_90"]),
        make_request("disasm", read_files([SOFTMAX_PY]), request_id="demo-triton-disasm",
                     archs=args.arch or ["sm_90"]),
    ]
    worst = ExitCode.OK
    # nice 10: the tool jobs yield the CPU to the rollout worker's engine on a CPU-only node
    with service_target(args, ("triton",), nice=10) as target, connect(target, args) as client:
        console.print(f"perfbox service at {target} ({'remote' if args.server else 'embedded'})")
        for request in requests:
            console.rule(request.request_id)
            result = client.run(request) if args.json else run_with_progress(client, request)
            print_json(result) if args.json else print_result(result)
            if result.status != pb.OK:
                worst = ExitCode.KERNEL_FAILURE
        if not args.no_rollout:
            _demo_rollout(target, args)
    return worst


def _demo_rollout(target: str, args: argparse.Namespace) -> None:
    """The rollout worker beside the service: one kernel-agent trajectory in each mode."""
    from perfbox.cli.rollout import engine_check, run_rollout

    try:
        engine_check()
    except ValueError as e:
        err_console.print(f"[yellow]rollout worker skipped:[/] {e}")
        return
    console.rule("rollout worker: a kernel-agent trajectory, each mode")
    run_rollout(target, ["resubmit", "resident", "resident+speculate"], 1, None, True,
                os.cpu_count() or 1, None, None)


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="start the service and run the bundled sample kernels",
                          description="Start a tool service and compile + disassemble the "
                                      "bundled CUDA and Triton sample kernels through it.")
    demo.add_argument("--arch", action="append", metavar="SM", help="target arch (sm_90)")
    demo.add_argument("--no-rollout", action="store_true",
                      help="skip the rollout worker part (tool service only)")
    add_service_flags(demo)
    demo.set_defaults(func=cmd_demo)
