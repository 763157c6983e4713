"""The check tool: is a KernelBench `ModelNew` numerically the reference `Model`?

Trust boundary. The tool process (trusted code) forks the submission's process *first*, before
it draws the input seed or computes a single reference output, so nothing the submission could
hunt for (seed, reference tensors, the verdict) exists in its memory. The submission's process
gets the weight-init seed and the inputs as tensors over a pipe, runs `ModelNew` twice per input
set (determinism), and sends its outputs back serialised with `torch.save`; the tool loads them
with `torch.load(weights_only=True)`, which only rebuilds plain tensors and containers (a tensor
subclass, a lazy object or any code cannot come through), and compares them here. The verdict
goes out on the tool's own result channel, which the submission's process closed at fork.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench",)
DEFAULT_REFERENCE = "reference.py"
DEFAULT_INPUT_SETS = 5
MAX_INPUT_SETS = 100
MAX_REPORTED_OUTPUTS = 64
DEFAULT_TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2, "float64": 1e-7}
_MAX_MESSAGE_BYTES = 1 << 31
COMPILE_FAILED = "NVRTC compile error: "


def _names(files: list[str], options: dict[str, Any]) -> tuple[str, str]:
    reference = str(options.get("reference_file") or DEFAULT_REFERENCE)
    if reference not in files:
        raise ToolInputError(f"reference file {reference!r} is not among the sources "
                             f"({', '.join(files)}); set check option reference_file")
    submission = str(options.get("submission_file") or "")
    suffix = ".cu" if options.get("launch") else ".py"
    if not submission:
        others = [f for f in files if f.endswith(suffix) and f != reference]
        if len(others) != 1:
            raise ToolInputError("name the submission with check option submission_file "
                                 f"(candidates: {', '.join(others) or 'none'})")
        submission = others[0]
    if submission not in files or submission == reference:
        raise ToolInputError(f"submission file {submission!r} is not a source distinct from "
                             "the reference")
    return reference, submission


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    from perfbox.tools import gpumode

    if language not in LANGUAGES:
        raise ToolInputError(f"check takes language kernelbench; got {language or 'none'}")
    if gpumode.is_gpumode(files):
        gpumode.names(files, options)
    else:
        _names(files, options)
    sets = int(options.get("num_input_sets") or DEFAULT_INPUT_SETS)
    if not 1 <= sets <= MAX_INPUT_SETS:
        raise ToolInputError(f"num_input_sets must be 1..{MAX_INPUT_SETS}, got {sets}")
    for dtype, tol in dict(options.get("tolerances", {})).items():
        if dtype not in DEFAULT_TOLERANCES or not 0 <= float(tol) < 1:
            raise ToolInputError(f"tolerance {dtype}={tol}: dtype must be one of "
                                 f"{', '.join(DEFAULT_TOLERANCES)} and 0 <= tolerance < 1")
    check_device_and_launch(options)


def check_device_and_launch(options: dict[str, Any]) -> None:
    """The options check and bench share: device, and a bare kernel's launch spec."""
    from perfbox.tools import launch_spec

    if str(options.get("device", "")) not in ("", "cpu", "cuda"):
        raise ToolInputError("device must be cpu, cuda or empty (automatic)")
    if options.get("launch"):
        launch_spec.validate(dict(options["launch"]))
        if str(options.get("device", "")) == "cpu":
            raise ToolInputError("a bare CUDA kernel (launch) runs on device cuda only")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


# -- moving tensors between the processes -----------------------------------------------------


def _dumps(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _loads(data: bytes) -> Any:
    """Rebuilds tensors and plain containers only: never runs code from the sender."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _load_module(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolInputError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flatten(item)]
    return [value]


# -- the submission's side ---------------------------------------------------------------------


def _submission_process(conn: Connection, workdir: Path, submission: str, device: str) -> None:
    """Runs in the forked submission process. Never returns."""
    code = 0
    try:
        import torch

        request = _loads(conn.recv_bytes(_MAX_MESSAGE_BYTES))
        timer = None
        if request.get("mode") == "bench" and device == "cuda":
            from perfbox.tools.gpu_timing import CudaTimer

            timer = CudaTimer()  # bound before the submission's code can patch anything
        if str(workdir) not in sys.path:
            sys.path.insert(0, str(workdir))
        module = None if request.get("launch") else _load_module(workdir / submission,
                                                                 "submission")
        if request.get("format") == "gpumode" and module is not None:
            if not hasattr(module, "custom_kernel"):
                raise ToolInputError(f"{submission} defines no custom_kernel")
            kernel = module.custom_kernel
            conn.send_bytes(b"ready")
            _serve_gpumode(conn, kernel, device)
            raise SystemExit(0)
        model = _build_submission(module, workdir, submission, request, device)
        conn.send_bytes(b"ready")
        if request.get("mode") == "bench":
            from perfbox.tools.bench import serve_timed_runs

            serve_timed_runs(conn, model, device, timer)
            raise SystemExit(0)
        while True:
            message = conn.recv_bytes(_MAX_MESSAGE_BYTES)
            if message == b"done":
                break
            inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in _loads(message)]
            runs = []
            for _ in range(2):  # twice: a deterministic kernel answers the same both times
                args = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
                with torch.no_grad():
                    out = model(*args)
                if device == "cuda":
                    torch.cuda.synchronize()
                runs.append([_plain(t) for t in _flatten(out)])
            conn.send_bytes(_dumps(runs))
    except SystemExit as e:
        code = 0 if e.code in (0, None) else 1  # a side that served its last command
        if code:
            text = f"the submission called exit({e.code!r})"
            try:
                conn.send_bytes(b"error:" + text.encode())
            except (OSError, ValueError):
                pass
    except BaseException:  # noqa: BLE001 - report the submission's failure, whatever it is
        code = 1
        text = traceback.format_exc(limit=8)
        for action in (lambda: conn.send_bytes(b"error:" + text.encode()[-4000:]),
                       lambda: sys.stderr.write(text)):
            try:
                action()
            except (OSError, ValueError):
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _build_submission(module: Any, workdir: Path, submission: str, request: dict[str, Any],
                      device: str) -> Any:
    """ModelNew from the submission's module, or a bare CUDA kernel wrapped as one."""
    import torch

    if request.get("launch"):
        from perfbox.tools import bare_kernel

        reference = _load_module(workdir / request["reference"], "perfbox_reference_params")
        params = bare_kernel.reference_params(reference, request["init_inputs"],
                                              request["init_seed"])
        return bare_kernel.build_model(workdir / submission, request["launch"], params)
    if not hasattr(module, "ModelNew"):
        raise ToolInputError(f"{submission} defines no ModelNew")
    torch.manual_seed(request["init_seed"])
    return module.ModelNew(*request["init_inputs"]).to(device)


def _serve_gpumode(conn: Connection, kernel: Any, device: str) -> None:
    """GPU MODE: custom_kernel(data) on each test case's data, twice (determinism)."""
    import torch

    while True:
        message = conn.recv_bytes(_MAX_MESSAGE_BYTES)
        if message == b"done":
            return
        data = _to_device(_loads(message), device)
        runs = []
        for _ in range(2):
            out = kernel(_clone(data))
            if device == "cuda":
                torch.cuda.synchronize()
            runs.append([_plain(t) for t in _flatten(out)])
        conn.send_bytes(_dumps(runs))


def _clone(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _to_device(value: Any, device: str) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A CPU copy of a tensor output; anything else is sent as is and judged by the tool (this
    runs in the submission's process, so the tool trusts none of it)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    return value


def _start_submission(workdir: Path, submission: str, device: str, keep_fds: tuple[int, ...]
                      ) -> tuple[int, Connection]:
    parent_end, child_end = _pipe_pair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        # The submission keeps stdin/stdout/stderr and its pipe to us, nothing else: not the
        # result channel.
        os.closerange(3, child_end.fileno())
        os.closerange(child_end.fileno() + 1, 65536)
        _submission_process(child_end, workdir, submission, device)
    child_end.close()
    return pid, parent_end


def _set_dumpable(on: bool) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(4, 1 if on else 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _pipe_pair() -> tuple[Connection, Connection]:
    from multiprocessing import Pipe

    a, b = Pipe(duplex=True)
    return a, b


# -- the tool's side ---------------------------------------------------------------------------


def _compare(expected: Any, got: Any, tol_for: dict[str, float], input_set: int, index: int
             ) -> dict[str, Any]:
    import torch

    entry: dict[str, Any] = {"input_set": input_set, "output_index": index, "passed": False}
    if not isinstance(got, torch.Tensor) or type(got) is not torch.Tensor:
        entry["problem"] = "type"
        return entry
    entry.update(shape=list(got.shape), expected_shape=list(expected.shape),
                 dtype=str(got.dtype).removeprefix("torch."),
                 expected_dtype=str(expected.dtype).removeprefix("torch."))
    if got.shape != expected.shape:
        entry["problem"] = "shape"
        return entry
    if got.dtype != expected.dtype:
        entry["problem"] = "dtype"
        return entry
    tol = tol_for.get(entry["expected_dtype"], 1e-4)
    exp, out = expected.double(), got.double()
    nan_bad = torch.isnan(out) & ~torch.isnan(exp)
    inf_bad = torch.isinf(out) & ~(torch.isinf(exp) & (torch.sign(out) == torch.sign(exp)))
    finite = torch.isfinite(exp) & torch.isfinite(out)
    diff = torch.where(finite, (out - exp).abs(), torch.zeros_like(exp))
    rel = diff / exp.abs().clamp_min(1e-12)
    bad = (finite & (diff > tol + tol * exp.abs())) | nan_bad | inf_bad
    bad = bad | (torch.isnan(exp) & ~torch.isnan(out))
    count = int(bad.sum())
    entry.update(max_abs_error=float(diff.max()) if diff.numel() else 0.0,
                 max_rel_error=float(rel.max()) if rel.numel() else 0.0,
                 mismatch_fraction=count / max(1, bad.numel()))
    if count:
        first = torch.nonzero(bad)[0].tolist()
        entry["first_mismatch_index"] = [int(i) for i in first]
        entry["problem"] = "nan" if bool(nan_bad.any()) else ("inf" if bool(inf_bad.any())
                                                               else "values")
        return entry
    entry["passed"] = True
    return entry


def _finite_or_zero(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _gpu_present() -> bool:
    """Asks NVML, not CUDA: initialising CUDA here would break it in the forked submission."""
    from perfbox.tools.gpu_program import gpu_arch  # gpu_program imports this module

    return gpu_arch() is not None


def choose_device(tool: str, options: dict[str, Any]) -> tuple[str, ToolOutcome | None]:
    """(device, None), or ("", the refusal) when cuda is asked for on a node without a GPU."""
    gpu = _gpu_present()
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


def run(request: ToolRequest) -> ToolOutcome:
    from perfbox.tools import gpumode

    if gpumode.is_gpumode(request.files):
        return gpumode.run(request)
    reference, submission = _names(request.files, request.options)
    options = request.options
    device, refusal = choose_device("check", options)
    if refusal is not None:
        return refusal
    num_sets = int(options.get("num_input_sets") or DEFAULT_INPUT_SETS)
    tol_for = {**DEFAULT_TOLERANCES, **{k: float(v) for k, v in
                                        dict(options.get("tolerances", {})).items()}}
    # 1. the reference module, before the submission can run: its process shares the
    # workspace and could otherwise rewrite reference.py under us
    ref = import_reference(request.workdir, reference, "perfbox_reference",
                           ("Model", "get_inputs", "get_init_inputs"), "KernelBench format")
    # 2. the submission's process, while nothing secret exists here yet
    with submission_side(request.workdir, submission, device) as conn:
        return _check(ref, conn, device, num_sets, tol_for,
                      launch_request(options, reference))


@contextlib.contextmanager
def submission_side(workdir: Path, submission: str, device: str) -> Iterator[Connection]:
    """The submission's process, forked now; this process becomes undumpable first, so the
    submission can neither ptrace it nor read its memory. Killed and reaped on exit."""
    _set_dumpable(False)
    pid, conn = _start_submission(workdir, submission, device, ())
    try:
        yield conn
    finally:
        stop_side(pid, conn)


def stop_side(pid: int, conn: Connection) -> None:
    conn.close()
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def answer_bytes(expected: list[Any]) -> int:
    """The most an honest answer to one input set can take: two runs of outputs the size of
    the reference's (any dtype up to 8 bytes per element), plus serialisation overhead."""
    import torch

    elements = sum(t.numel() for t in expected if isinstance(t, torch.Tensor))
    return 2 * 8 * elements + (1 << 20)


def _receive(conn: Connection, max_bytes: int = _MAX_MESSAGE_BYTES) -> tuple[Any | None, str]:
    """(payload, "") or (None, why the submission failed). A message longer than max_bytes
    (an answer is about as large as the reference's output) is refused at once: the
    submission wrote something of its own on the channel, and the tool must not wait for a
    body that never comes."""
    try:
        data = conn.recv_bytes(max_bytes)
    except EOFError:
        return None, "the submission's process exited before answering"
    except OSError:
        return None, ("the submission wrote something other than its answer on the tool's "
                      "channel (a message longer than any output it could send)")
    if data.startswith(b"error:"):
        text = data[len(b"error:"):].decode(errors="replace").strip()
        if "CompileException:" in text:  # a bare kernel that NVRTC refused: keep its log
            return None, COMPILE_FAILED + text.split("CompileException:", 1)[1].strip()[:2000]
        return None, text.splitlines()[-1]
    if data == b"ready":
        return data, ""
    try:
        return _loads(data), ""
    except Exception as e:  # not plain tensors: a subclass, a lazy object, code...
        return None, f"outputs are not plain tensors ({type(e).__name__})"


def import_reference(workdir: Path, reference: str, module_name: str,
                     required: tuple[str, ...], layout: str) -> Any:
    """Imports the caller's reference (its failure is a bad request, not the kernel's) and
    checks it defines what the task format needs. The workspace goes on sys.path first, for
    references that import helper files sent with them (GPU MODE's task.py and utils.py)."""
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    try:
        ref = _load_module(workdir / reference, module_name)
    except ToolInputError:
        raise
    except Exception as e:
        raise ToolInputError(f"the reference {reference} failed to import: "
                             f"{type(e).__name__}: {e}") from e
    for name in required:
        if not hasattr(ref, name):
            raise ToolInputError(f"{reference} defines no {name} ({layout})")
    return ref


def failure_word(status: Status) -> str:
    return {Status.WRONG_ANSWER: "Wrong answer", Status.COMPILE_ERROR: "Compile error"}.get(
        status, "Runtime error")


def build_failure_status(why: str) -> Status:
    return Status.COMPILE_ERROR if why.startswith(COMPILE_FAILED) else Status.RUNTIME_ERROR


def launch_request(options: dict[str, Any], reference: str) -> dict[str, Any]:
    """What the submission's process needs to build a bare kernel (nothing for ModelNew)."""
    if not options.get("launch"):
        return {}
    return {"launch": dict(options["launch"]), "reference": reference}


def _check(ref: Any, conn: Connection, device: str, num_sets: int, tol_for: dict[str, float],
           extra: dict[str, Any]) -> ToolOutcome:
    import torch

    # 3. now the secrets: the seeds, then the reference's inputs and outputs
    init_seed = secrets.randbits(31)
    init_inputs = list(ref.get_init_inputs())
    torch.manual_seed(init_seed)
    model = ref.Model(*init_inputs).to(device)
    conn.send_bytes(_dumps({"init_seed": init_seed, "init_inputs": init_inputs,
                            **extra}))
    ready, why = _receive(conn)
    if ready is None:
        return _failed(build_failure_status(why), f"ModelNew failed to build: {why}", device,
                       num_sets)
    outputs: list[dict[str, Any]] = []
    deterministic = True
    for input_set in range(num_sets):
        torch.manual_seed(secrets.randbits(63))
        inputs = list(ref.get_inputs())
        with torch.no_grad():
            expected = [t.detach().cpu() for t in _flatten(model(
                *[x.clone().to(device) if isinstance(x, torch.Tensor) else x for x in inputs]))]
        conn.send_bytes(_dumps([x.cpu() if isinstance(x, torch.Tensor) else x for x in inputs]))
        runs, why = _receive(conn, answer_bytes(expected))
        if runs is None:
            return _failed(Status.RUNTIME_ERROR, f"ModelNew raised on input set {input_set}: "
                           f"{why}", device, num_sets, outputs)
        first, second = runs
        if len(first) != len(expected):
            return _failed(Status.WRONG_ANSWER, f"ModelNew returned {len(first)} outputs, the "
                           f"reference {len(expected)}", device, num_sets, outputs)
        for index, (exp, got) in enumerate(zip(expected, first)):
            entry = _compare(exp, got, tol_for, input_set, index)
            outputs.append(entry)
            if not entry["passed"]:
                return _failed(Status.WRONG_ANSWER, _describe(entry), device, num_sets, outputs)
        if any(not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                    and a.shape == b.shape and torch.equal(a, b)) for a, b in zip(first, second)):
            deterministic = False
    conn.send_bytes(b"done")
    report = _report(True, "", device, num_sets, outputs, deterministic)
    worst = max((o.get("max_abs_error", 0.0) for o in outputs), default=0.0)
    summary = (f"Correct on {num_sets} random input sets ({device}); max abs error "
               f"{_finite_or_zero(worst):.3g}.")
    if not deterministic:
        summary += " Note: two runs on the same input gave different outputs."
    return ToolOutcome(Status.OK, summary, report)


def _describe(entry: dict[str, Any]) -> str:
    where = f"output {entry['output_index']} of input set {entry['input_set']}"
    problem = entry.get("problem")
    if problem == "shape":
        return f"{where}: shape {entry['shape']}, expected {entry['expected_shape']}"
    if problem == "dtype":
        return f"{where}: dtype {entry['dtype']}, expected {entry['expected_dtype']}"
    if problem == "type":
        return f"{where}: not a plain tensor"
    return (f"{where}: {entry['mismatch_fraction']:.1%} of elements outside tolerance "
            f"({problem}); max abs error {entry['max_abs_error']:.3g}, first at index "
            f"{entry.get('first_mismatch_index')}")


def _report(passed: bool, reason: str, device: str, num_sets: int,
            outputs: list[dict[str, Any]], deterministic: bool) -> dict[str, Any]:
    clean = []
    for o in outputs[:MAX_REPORTED_OUTPUTS]:
        o = dict(o)
        for key in ("max_abs_error", "max_rel_error"):
            if key in o:
                o[key] = _finite_or_zero(o[key])
        clean.append(o)
    return {"passed": passed, "reason": reason, "device": device, "num_input_sets": num_sets,
            "outputs": clean, "deterministic": deterministic}


def _failed(status: Status, reason: str, device: str, num_sets: int,
            outputs: list[dict[str, Any]] | None = None) -> ToolOutcome:
    report = _report(False, reason, device, num_sets, outputs or [], True)
    word = failure_word(status)
    return ToolOutcome(status, f"{word}: {reason}", report, error=reason)
