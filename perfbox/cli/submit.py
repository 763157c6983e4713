"""`perfbox submit` and `perfbox tools`: one tool call from the shell, and the tools a service
offers. The tool names come from the registry (`perfbox.tools.TOOLS`); `--option KEY=VALUE`
reaches any field of a tool's options message, so a new tool needs no flag here to be usable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.cli.common import (add_service_flags, connect, console, json_or_text, parse_pairs,
                                print_json, service_target)
from perfbox.cli.render import print_result, run_with_progress
from perfbox.exit_codes import ExitCode
from perfbox.tools import TOOLS

# tools that act on a KernelBench problem only: --reference is required, the language implied
_KERNELBENCH_TOOLS = tuple(name for name, spec in TOOLS.items()
                           if spec.languages == ("kernelbench",))


def _limits_from(args: argparse.Namespace) -> pb.Limits:
    return pb.Limits(
        wall_time_ms=int((args.wall_time_s or 0) * 1000),
        memory_bytes=int((args.memory_mb or 0) * 1024 * 1024),
    )


def _launch_spec(path: str) -> dict[str, Any]:
    """A launch spec file (JSON or YAML) for a bare CUDA kernel."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such launch spec file")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not JSON or YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a launch spec is a mapping (kernel, grid, block, args, "
                         "outputs)")
    return spec


def _read_files(args: argparse.Namespace) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in list(args.files) + ([args.reference] if args.reference else []):
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{path}: no such file")
        if p.name in files:
            raise ValueError(f"two files are named {p.name}; rename one")
        files[p.name] = p.read_text()
    return files


def _problem_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the tools that act on a problem (check, bench, profile, sanitize)."""
    reference = Path(args.reference).name if args.reference else ""
    submission = Path(args.files[0]).name if args.reference else ""
    options: dict[str, Any] = {}
    if args.tool == "bench":
        options = {"reference_file": reference, "submission_file": submission,
                   "device": args.device or "", "time_budget_s": args.time_budget_s or 0.0}
    if args.tool in ("profile", "sanitize"):
        options = {"reference_file": reference, "submission_file": submission,
                   "args": args.program_arg or []}
        if args.tool == "profile":
            options.update(sections=args.section or [], kernel_filter=args.kernel_filter or "",
                           max_kernels=args.max_kernels or 0, nsys=args.nsys)
        else:
            options.update(checks=args.check or [], max_errors=args.max_errors or 0)
    if args.tool == "check":
        options = {"reference_file": reference, "submission_file": submission,
                   "num_input_sets": args.input_sets or 0,
                   "tolerances": parse_pairs(args.tolerance, "--tolerance", "DTYPE=TOL", float),
                   "device": args.device or ""}
    if args.tool in _KERNELBENCH_TOOLS:
        options.update(hack_policy=args.hack_policy or "",
                       require_custom_kernel=args.require_custom_kernel)
        if args.problem_inputs_only:
            options["input_distributions"] = ["problem"]
        if args.tool == "bench":
            options.update(threads=args.threads or 0,
                           max_plausible_speedup=args.max_plausible_speedup or 0.0)
    return options


def _free_options(args: argparse.Namespace) -> dict[str, Any]:
    """--option KEY=VALUE pairs, each a field of the tool's options message."""
    from perfbox.tool_messages import option_names

    free = parse_pairs(args.option, "--option", "KEY=VALUE (a field of the tool's options "
                       "message)", json_or_text)
    known = option_names(args.tool)
    unknown = sorted(set(free) - set(known))
    if unknown:
        raise ValueError(f"--option {', '.join(unknown)}: not an option of {args.tool}; "
                         f"its options: {', '.join(known)}")
    return free


def build_submit_request(args: argparse.Namespace) -> pb.ToolRequest:
    from perfbox.client import make_request

    if args.tool in _KERNELBENCH_TOOLS and not args.reference:
        raise ValueError(f"--tool {args.tool} needs --reference REF.py (Model, get_inputs, "
                         "get_init_inputs)")
    files = _read_files(args)
    language = args.language or ("kernelbench" if args.tool in _KERNELBENCH_TOOLS
                                 or args.reference else None)
    launch = _launch_spec(args.launch) if args.launch else None
    if launch is not None and args.tool not in _KERNELBENCH_TOOLS:
        raise ValueError(f"--launch goes with --tool {' or '.join(_KERNELBENCH_TOOLS)}")
    options: dict[str, Any] = dict(
        kernel=args.kernel or "", signature=parse_pairs(args.signature, "--signature"),
        constants=parse_pairs(args.constant, "--constant"), num_warps=args.num_warps or 0,
        num_stages=args.num_stages or 0, defines=args.define or [], line_info=args.line_info,
        include_artifacts=args.artifacts, include_sass=args.sass, include_ptx=args.ptx,
        **_problem_options(args))
    if launch is not None:
        options["launch"] = launch
    options.update(_free_options(args))
    archs = options.pop("archs", None) or args.arch or []
    return make_request(args.tool, files, language=language, request_id=args.request_id or "",
                        archs=archs, limits=_limits_from(args), no_cache=args.no_cache,
                        **options)


def preload_for(request: pb.ToolRequest) -> tuple[str, ...]:
    """What an embedded service's warm workers import for this request's language."""
    return {pb.LANGUAGE_TRITON: ("triton",), pb.LANGUAGE_KERNELBENCH: ("torch",)}.get(
        request.language, ())


def cmd_submit(args: argparse.Namespace) -> int:
    request = build_submit_request(args)
    with service_target(args, preload_for(request)) as target:
        with connect(target, args) as client:
            result = client.run(request) if args.json else run_with_progress(client, request)
    if args.json:
        print_json(result)
    else:
        print_result(result)
    return ExitCode.OK if result.status == pb.OK else ExitCode.KERNEL_FAILURE


def cmd_tools(args: argparse.Namespace) -> int:
    with service_target(args, ()) as target, connect(target, args) as client:
        response = client.list_tools()
    if args.json:  # the OpenAI function schemas, as chat templates and RL frameworks take them
        print(json.dumps([json.loads(t.function_schema) for t in response.tools], indent=2))
        return ExitCode.OK
    table = Table(title="perfbox tools", title_justify="left")
    for column in ("tool", "languages", "GPU", "cached", "available", "description"):
        table.add_column(column)
    for t in response.tools:
        langs = ", ".join(pb.Language.Name(x).removeprefix("LANGUAGE_").lower()
                          for x in t.languages)
        available = "yes" if t.available else f"no: {t.unavailable_reason}"
        table.add_row(t.name, langs, "needs" if t.needs_gpu else "-",
                      "yes" if t.cacheable else "no", available, t.description)
    console.print(table)
    return ExitCode.OK


def add_commands(sub: Any) -> None:
    submit = sub.add_parser("submit", help="run a tool on kernel files",
                            description="Run a tool on kernel source files and print the result.")
    submit.add_argument("files", nargs="+", metavar="FILE", help="source files (.cu, .cuh, .py)")
    submit.add_argument("--tool", required=True, choices=tuple(TOOLS))
    submit.add_argument("--language", choices=("cuda", "triton", "kernelbench"),
                        help="default: from the file suffixes")
    submit.add_argument("--arch", action="append", metavar="SM",
                        help="target arch, repeatable (default sm_90)")
    submit.add_argument("--kernel", help="Triton: the @triton.jit function to compile")
    submit.add_argument("--constant", action="append", metavar="NAME=VALUE",
                        help="Triton: constexpr value, repeatable")
    submit.add_argument("--signature", action="append", metavar="NAME=TYPE",
                        help="Triton: argument type such as *fp16 or i64, repeatable")
    submit.add_argument("--num-warps", type=int, help="Triton: warps per program (default 4)")
    submit.add_argument("--num-stages", type=int, help="Triton: pipeline stages (default 3)")
    submit.add_argument("--define", action="append", metavar="NAME[=VALUE]",
                        help="CUDA: preprocessor definition, repeatable")
    submit.add_argument("--line-info", action="store_true", help="CUDA: compile with -lineinfo")
    submit.add_argument("--artifacts", action="store_true",
                        help="include PTX/TTIR/TTGIR texts in the report")
    submit.add_argument("--sass", action="store_true", help="disasm: include SASS text")
    submit.add_argument("--ptx", action="store_true", help="disasm: include PTX text")
    submit.add_argument("--reference", metavar="REF.py",
                        help="check: the reference (Model, get_inputs, get_init_inputs); "
                             "FILE is then the submission with ModelNew")
    submit.add_argument("--launch", metavar="SPEC.json",
                        help="check/bench: FILE is a bare CUDA kernel launched as this spec "
                             "says (kernel, grid, block, args, outputs; GPU only)")
    submit.add_argument("--input-sets", type=int, help="check: random input sets (default 5)")
    submit.add_argument("--tolerance", action="append", metavar="DTYPE=TOL",
                        help="check: tolerance per dtype, e.g. float16=2e-2 (repeatable)")
    submit.add_argument("--device", choices=("cpu", "cuda"),
                        help="check: where to run (default: a GPU when present)")
    submit.add_argument("--time-budget-s", type=float,
                        help="bench: seconds of sampling at most (default 5)")
    submit.add_argument("--threads", type=int,
                        help="bench (CPU): CPUs and threads for each side (default 1)")
    submit.add_argument("--max-plausible-speedup", type=float,
                        help="bench: a speedup above this is IMPLAUSIBLE (default 1000)")
    submit.add_argument("--hack-policy", choices=("flag", "reject"),
                        help="check/bench: what a static flag does (default: flag)")
    submit.add_argument("--require-custom-kernel", action="store_true",
                        help="check/bench: flag a ModelNew that only calls PyTorch")
    submit.add_argument("--problem-inputs-only", action="store_true",
                        help="check/bench: no sign-varied, scaled inputs beside get_inputs'")
    submit.add_argument("--section", action="append", metavar="NAME",
                        help="profile: ncu section, repeatable (default: SpeedOfLight, memory, "
                             "occupancy, launch, warp state, compute, roofline)")
    submit.add_argument("--kernel-filter", metavar="REGEX", help="profile: kernels to profile")
    submit.add_argument("--max-kernels", type=int, help="profile: launches profiled (default 20)")
    submit.add_argument("--nsys", action="store_true",
                        help="profile: add an Nsight Systems summary where nsys works")
    submit.add_argument("--check", action="append", choices=("memcheck", "racecheck",
                                                            "initcheck", "synccheck"),
                        help="sanitize: compute-sanitizer tool, repeatable (default memcheck)")
    submit.add_argument("--max-errors", type=int, help="sanitize: errors kept per check (20)")
    submit.add_argument("--program-arg", action="append", metavar="ARG",
                        help="profile/sanitize of a CUDA program: argument, repeatable")
    submit.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="any field of the tool's options message (see proto/), the value "
                             "read as JSON where it parses; repeatable, wins over the flags above")
    submit.add_argument("--wall-time-s", type=float, help="job wall-time limit")
    submit.add_argument("--memory-mb", type=float, help="job memory limit")
    submit.add_argument("--no-cache", action="store_true", help="do not answer from the cache")
    submit.add_argument("--request-id", help="id echoed in the result")
    add_service_flags(submit)
    submit.set_defaults(func=cmd_submit)

    tools = sub.add_parser("tools", help="list the tools and whether they run here",
                           description="List the tools; with --json, print their OpenAI "
                                       "function-calling schemas (a JSON list).")
    add_service_flags(tools)
    tools.set_defaults(func=cmd_tools)
