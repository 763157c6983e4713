"""What check and bench share about a request, before and around a measurement: the options
both take, where the measurement runs, the submission's static flags and what the policy makes
of them, and whether a reference's outputs are all finite. One home, so neither tool reaches
into the other.
"""

from __future__ import annotations

from typing import Any

from perfbox.tools.harness import flags, inputs, session
from perfbox.tools.harness.problems import Problem
from perfbox.tools.types import Status, ToolInputError, ToolOutcome


def validate_common(options: dict[str, Any]) -> None:
    """The options check and bench share: device, launch spec, input distributions, policy."""
    from perfbox.tools import launch_spec

    if str(options.get("device", "")) not in ("", "cpu", "cuda"):
        raise ToolInputError("device must be cpu, cuda or empty (automatic)")
    if options.get("launch"):
        launch_spec.validate(dict(options["launch"]))
        if str(options.get("device", "")) == "cpu":
            raise ToolInputError("a bare CUDA kernel (launch) runs on device cuda only")
    for name in options.get("input_distributions") or ():
        if name not in inputs.DISTRIBUTIONS:
            raise ToolInputError(f"input_distributions: {name!r} is not one of "
                                 f"{', '.join(inputs.DISTRIBUTIONS)}")
    if options.get("input_distributions") and \
            inputs.PROBLEM not in options["input_distributions"]:
        raise ToolInputError("input_distributions must include 'problem'")
    policy = str(options.get("hack_policy") or "flag")
    if policy not in flags.POLICIES:
        raise ToolInputError(f"hack_policy must be one of {', '.join(flags.POLICIES)}")


def gpu_present() -> bool:
    """Asks NVML, not CUDA: initialising CUDA here would break it in the forked submission."""
    from perfbox.tools.gpu_program import gpu_arch

    return gpu_arch() is not None


def choose_device(tool: str, options: dict[str, Any]) -> tuple[str, ToolOutcome | None]:
    """(device, None), or ("", the refusal) when cuda is asked for on a node without a GPU."""
    gpu = gpu_present()
    device = str(options.get("device") or ("cuda" if gpu or options.get("launch") else "cpu"))
    if options.get("launch") and not gpu:
        return "", ToolOutcome(Status.UNAVAILABLE_HERE, f"{tool} of a bare CUDA kernel "
                               "(launch spec) needs a GPU and this node has none; wrap the "
                               "kernel in a PyTorch ModelNew to run it on the CPU here, or "
                               "compile/disasm it", error="no GPU on this node")
    if options.get("launch"):
        from perfbox.tools import bare_kernel

        if not bare_kernel.cupy_available():
            return "", ToolOutcome(Status.UNAVAILABLE_HERE, f"{tool} of a bare CUDA kernel "
                                   "needs CuPy, which is not installed on this node (pip "
                                   "install 'perfbox[gpu]')", error="cupy not installed")
    if device == "cuda" and not gpu:
        return "", ToolOutcome(Status.UNAVAILABLE_HERE, f"{tool} on device cuda needs a GPU; "
                               "this node has none (leave device empty to run on the CPU)",
                               error="no GPU on this node")
    return device, None


def source_flags(problem: Problem, options: dict[str, Any]) -> list[flags.Flag]:
    """The submission's static flags, less the categories its reference raises too (a fp16
    problem's submission may use fp16)."""
    if options.get("launch"):
        return []
    try:
        source = (problem.workdir / problem.submission_file).read_text(errors="replace")
        ref_source = (problem.workdir / problem.reference_file).read_text(errors="replace")
    except OSError:
        return []
    in_reference = {f.category for f in flags.scan(ref_source)}
    return [f for f in flags.scan(source, bool(options.get("require_custom_kernel")))
            if f.category not in in_reference]


def flag_refusal(found: list[flags.Flag], options: dict[str, Any], report: dict[str, Any]
                 ) -> ToolOutcome | None:
    if not found or str(options.get("hack_policy") or "flag") != "reject":
        return None
    first = found[0]
    return session.outcome(Status.REJECTED, f"the submission was flagged {first.category} at "
                           f"line {first.line} ({first.evidence}); {len(found)} flag(s) in "
                           "all, hack_policy is reject", report)


def all_finite(values: list[Any]) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in values
               if isinstance(t, torch.Tensor) and t.is_floating_point())
