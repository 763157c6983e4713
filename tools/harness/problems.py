"""The problem formats a measurement understands, behind one interface.

A `Problem` says how to draw an input set (the arguments of one call), how to build the
reference's callable (in the tool, or in the reference's side), what the submission's side
must build (a request of plain data, and `build_submission` run there), and how to judge one
call's outputs. KernelBench: `Model`/`get_inputs`/`get_init_inputs` against `ModelNew` (or a
bare CUDA kernel); GPU MODE: `generate_input(**case)`/`ref_kernel`/`check_implementation`
against `custom_kernel(data)`, every case's published seed replaced by a secret one.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from perfbox.tools.harness import compare, inputs, wire
from perfbox.tools.types import ToolInputError

KERNELBENCH, GPUMODE = "kernelbench", "gpumode"
TASK_FILE = "task.yml"
DEFAULT_REFERENCE = "reference.py"
DEFAULT_GPUMODE_SUBMISSION = "submission.py"


def is_gpumode(files: list[str]) -> bool:
    return TASK_FILE in files


def kernelbench_names(files: list[str], options: dict[str, Any]) -> tuple[str, str]:
    reference = str(options.get("reference_file") or DEFAULT_REFERENCE)
    if reference not in files:
        raise ToolInputError(f"reference file {reference!r} is not among the sources "
                             f"({', '.join(files)}); set option reference_file")
    submission = str(options.get("submission_file") or "")
    suffix = ".cu" if options.get("launch") else ".py"
    if not submission:
        others = [f for f in files if f.endswith(suffix) and f != reference]
        if len(others) != 1:
            raise ToolInputError("name the submission with option submission_file "
                                 f"(candidates: {', '.join(others) or 'none'})")
        submission = others[0]
    if submission not in files or submission == reference:
        raise ToolInputError(f"submission file {submission!r} is not a source distinct from "
                             "the reference")
    return reference, submission


def gpumode_names(files: list[str], options: dict[str, Any]) -> tuple[str, str]:
    reference = str(options.get("reference_file") or DEFAULT_REFERENCE)
    submission = str(options.get("submission_file") or DEFAULT_GPUMODE_SUBMISSION)
    for name, what in ((reference, "reference_file"), (submission, "submission_file")):
        if name not in files:
            raise ToolInputError(f"GPU MODE task: {name!r} is not among the sources; send it "
                                 f"or set option {what}")
    return reference, submission


def names(files: list[str], options: dict[str, Any]) -> tuple[str, str]:
    return gpumode_names(files, options) if is_gpumode(files) else \
        kernelbench_names(files, options)


def import_reference(workdir: Path, reference: str, module_name: str,
                     required: tuple[str, ...], layout: str) -> Any:
    """Imports the caller's reference (its failure is a bad request, not the kernel's) and
    checks it defines what the format needs. The workspace goes on sys.path first, for
    references that import helper files sent with them (GPU MODE's task.py and utils.py)."""
    from perfbox.tools.harness.side import load_module

    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    try:
        ref = load_module(workdir / reference, module_name)
    except ToolInputError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the caller's module raises is theirs
        raise ToolInputError(f"the reference {reference} failed to import: "
                             f"{type(e).__name__}: {e}") from e
    for name in required:
        if not hasattr(ref, name):
            raise ToolInputError(f"{reference} defines no {name} ({layout})")
    return ref


@dataclass
class Problem:
    """One problem, loaded in the tool's process before any side exists."""

    format: str  # KERNELBENCH or GPUMODE
    workdir: Path
    reference_file: str
    submission_file: str
    module: Any  # the imported reference module
    device: str
    options: dict[str, Any]
    init_seed: int = 0  # KernelBench: weight-init seed, drawn after the submission is forked
    init_inputs: list[Any] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)  # GPU MODE: test cases
    benchmarks: list[dict[str, Any]] = field(default_factory=list)  # GPU MODE: bench cases
    _model: Any = None

    # -- secrets, drawn once the submission's side exists -----------------------------------
    def draw_secrets(self) -> None:
        if self.format == KERNELBENCH:
            self.init_seed = secrets.randbits(31)
            self.init_inputs = list(self.module.get_init_inputs())
        for case in (*self.cases, *self.benchmarks):
            if "seed" in case:
                case["seed"] = secrets.randbits(31)  # the published seed is public

    def submission_request(self, mode: str) -> dict[str, Any]:
        """Plain data the submission's side needs to build its callable."""
        request: dict[str, Any] = {"format": self.format, "device": self.device, "mode": mode}
        if self.format == KERNELBENCH:
            request.update(init_seed=self.init_seed, init_inputs=self.init_inputs)
            if self.options.get("launch"):
                request.update(launch=dict(self.options["launch"]),
                               reference=self.reference_file,
                               submission=self.submission_file, workdir=str(self.workdir))
        return request

    # -- the reference ----------------------------------------------------------------------
    def reference_request(self, mode: str) -> dict[str, Any]:
        """Plain data the reference's side needs to build its callable (it was forked before
        the seed existed)."""
        return {"device": self.device, "mode": mode, "init_seed": self.init_seed,
                "init_inputs": self.init_inputs}

    def build_reference(self, request: dict[str, Any]) -> Callable[..., Any]:
        """Runs in the reference's side."""
        self.init_seed = int(request["init_seed"])
        self.init_inputs = list(request["init_inputs"])
        return self.reference_fn()

    def reference_fn(self) -> Callable[..., Any]:
        """The reference's callable, built the same way in the tool and in its side."""
        if self.format == GPUMODE:
            return self.module.ref_kernel
        import torch

        torch.manual_seed(self.init_seed)
        return self.module.Model(*self.init_inputs).to(self.device)

    def expected(self, args: list[Any]) -> list[Any]:
        """The reference's outputs on `args` (CPU tensors), computed in the tool."""
        import torch

        if self._model is None:
            self._model = self.reference_fn()
        with torch.no_grad():
            out = self._model(*wire.to_device(wire.clone(args), self.device))
        return [t.detach().cpu() if isinstance(t, torch.Tensor) else t
                for t in wire.flatten(out)]

    def reference_aliases_inputs(self, args: list[Any]) -> bool:
        """Whether the reference returns (a view of) one of its inputs: then a kernel may too."""
        import torch

        if self._model is None:
            self._model = self.reference_fn()
        args = wire.to_device(wire.clone(args), self.device)
        with torch.no_grad():
            out = wire.flatten(self._model(*args))
        spans = [(t.untyped_storage().data_ptr(),
                  t.untyped_storage().data_ptr() + t.untyped_storage().nbytes())
                 for t in wire.flatten(args) if isinstance(t, torch.Tensor)]
        return any(isinstance(t, torch.Tensor) and t.numel() and
                   any(lo <= t.data_ptr() < hi for lo, hi in spans) for t in out)

    # -- inputs -----------------------------------------------------------------------------
    def draw(self, distribution: str = inputs.PROBLEM, case: dict[str, Any] | None = None
             ) -> list[Any]:
        """One call's arguments, on the CPU."""
        if self.format == GPUMODE:
            assert case is not None
            if "seed" in case:
                case = {**case, "seed": secrets.randbits(31)}
            return [wire.to_device(self.module.generate_input(**case), "cpu")]
        return inputs.draw(self.module.get_inputs, distribution)

    def draw_continuing(self, case: dict[str, Any] | None = None) -> list[Any]:
        """One call's arguments from the problem's distribution, continuing torch's random
        stream (the caller seeded it secretly): drawing many sets costs no reseeding."""
        import torch

        if self.format == GPUMODE:
            return self.draw(inputs.PROBLEM, case)
        return [x.detach().cpu() if isinstance(x, torch.Tensor) else x
                for x in list(self.module.get_inputs())]

    # -- judging ----------------------------------------------------------------------------
    def judge(self, args: list[Any], got: Any, tol_for: dict[str, float], set_index: int,
              expected: list[Any] | None = None) -> tuple[list[dict[str, Any]], str]:
        """(OutputCheck entries, "" or why the outputs are wrong) for one call. Whatever the
        submission sent, judging it never raises: an output the comparison cannot handle is
        a wrong output."""
        if not isinstance(got, list):
            return [], "the outputs are not a list of tensors"
        if expected is None:
            expected = self.expected(args)  # the reference's failure is not the submission's
        try:
            return self._judge(args, got, tol_for, set_index, expected)
        except Exception as e:  # noqa: BLE001 - the submission's values, not the tool, failed
            return [], f"the outputs could not be compared ({type(e).__name__}: {e})"[:500]

    def _judge(self, args: list[Any], got: list[Any], tol_for: dict[str, float],
               set_index: int, expected: list[Any]) -> tuple[list[dict[str, Any]], str]:
        entries: list[dict[str, Any]] = []
        if len(got) != len(expected):
            return entries, (f"returned {len(got)} outputs, the reference "
                             f"{len(expected)}")
        for index, (exp, out) in enumerate(zip(expected, got)):
            import torch

            if not isinstance(exp, torch.Tensor):  # a Python number or other value
                why = compare.compare_value(exp, out, tol_for)
                if why and self.format == KERNELBENCH:
                    return entries, f"output {index} of input set {set_index}: {why}"
                continue
            entry = compare.compare(exp, out, tol_for, set_index, index)
            entries.append(entry)
            if not entry["passed"] and self.format == KERNELBENCH:
                return entries, compare.describe(entry)
        if self.format == GPUMODE:
            good, message = self._task_verdict(args[0], got)
            if not good:
                return entries, message or "mismatch"
        return entries, ""

    def _task_verdict(self, data: Any, got: list[Any]) -> tuple[bool, str]:
        """The task's own check_implementation, on a fresh copy of the inputs."""
        where = _device_of(data) or self.device
        output = [wire.to_device(t, where) for t in got]
        try:
            result = self.module.check_implementation(wire.clone(data),
                                                      output[0] if len(output) == 1
                                                      else tuple(output))
        except Exception as e:  # noqa: BLE001 - a malformed output can make the checker raise
            return False, f"check_implementation raised {type(e).__name__}: {e}"
        if isinstance(result, tuple):
            return bool(result[0]), str(result[1]) if len(result) > 1 else ""
        return bool(result), ""


def _device_of(data: Any) -> str:
    import torch

    for value in wire.flatten(data if isinstance(data, (list, tuple)) else [data]):
        if isinstance(value, torch.Tensor):
            return str(value.device)
    return ""


def build_submission(module: Any, request: dict[str, Any]) -> Callable[..., Any]:
    """Runs in the submission's side: the callable to measure (ModelNew, a bare CUDA kernel
    wrapped as one, or GPU MODE's custom_kernel)."""
    import torch

    from perfbox.tools.harness.side import load_module

    device = str(request["device"])
    if request["format"] == GPUMODE:
        if not hasattr(module, "custom_kernel"):
            raise ToolInputError("the submission defines no custom_kernel")
        return module.custom_kernel
    if request.get("launch"):
        from perfbox.tools import bare_kernel

        workdir = Path(request["workdir"])
        reference = load_module(workdir / request["reference"], "perfbox_reference_params")
        params = bare_kernel.reference_params(reference, request["init_inputs"],
                                              request["init_seed"])
        return bare_kernel.build_model(workdir / request["submission"], request["launch"],
                                       params)
    if not hasattr(module, "ModelNew"):
        raise ToolInputError("the submission defines no ModelNew")
    torch.manual_seed(request["init_seed"])
    return module.ModelNew(*request["init_inputs"]).to(device)


def load(request_files: list[str], workdir: Path, options: dict[str, Any], device: str
         ) -> Problem:
    """Imports the reference (before any side exists: the submission's side shares the
    workspace and could otherwise rewrite it) and reads a GPU MODE task's cases."""
    reference, submission = names(request_files, options)
    if is_gpumode(request_files):
        module = import_reference(workdir, reference, "reference",
                                  ("generate_input", "ref_kernel", "check_implementation"),
                                  "GPU MODE task format")
        tests, benchmarks = gpumode_cases(workdir)
        return Problem(GPUMODE, workdir, reference, submission, module, device, options,
                       cases=tests, benchmarks=benchmarks)
    module = import_reference(workdir, reference, "perfbox_reference",
                              ("Model", "get_inputs", "get_init_inputs"), "KernelBench format")
    return Problem(KERNELBENCH, workdir, reference, submission, module, device, options)


def gpumode_cases(workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import yaml

    try:
        task = yaml.safe_load((workdir / TASK_FILE).read_text())
    except yaml.YAMLError as e:
        raise ToolInputError(f"{TASK_FILE} is not valid YAML: {e}") from e
    tests = task.get("tests") if isinstance(task, dict) else None
    if not tests or not all(isinstance(c, dict) for c in tests):
        raise ToolInputError(f"{TASK_FILE} has no 'tests' list of argument mappings")
    benchmarks = task.get("benchmarks") or []
    if not isinstance(benchmarks, list) or not all(isinstance(c, dict) for c in benchmarks):
        raise ToolInputError(f"{TASK_FILE}: 'benchmarks' must be a list of argument mappings")
    return [dict(c) for c in tests], [dict(c) for c in benchmarks]
