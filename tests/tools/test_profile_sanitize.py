"""profile and sanitize: clear refusals where they cannot run, input validation, and (on a GPU
node) real Nsight Compute and compute-sanitizer runs on real programs and KernelBench code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools import gpu_program
from perfbox.tools.types import Status, ToolInputError, ToolRequest
from tests.tools.isolated import run_tool_isolated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROGRAMS = FIXTURES / "programs"
NEW = (Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" / "new.py").read_text()
needs_no_gpu = pytest.mark.skipif(gpu_program.gpu_arch() is not None, reason="this node has a GPU")


def _cuda_program(tmp_path: Path, name: str) -> list[str]:
    shutil.copy(PROGRAMS / f"{name}.cu", tmp_path / f"{name}.cu")
    return [f"{name}.cu"]


def _kernelbench(tmp_path: Path) -> list[str]:
    shutil.copy(FIXTURES / "kernelbench" / "reference.py", tmp_path / "reference.py")
    (tmp_path / "new.py").write_text(NEW)
    return ["new.py", "reference.py"]


@needs_no_gpu
@pytest.mark.parametrize("tool", ["profile", "sanitize"])
def test_without_a_gpu_the_tools_say_so(tmp_path: Path, tool: str) -> None:
    files = _cuda_program(tmp_path, "profile_kernels")
    out = tools.run(ToolRequest(tool, "cuda", files, tmp_path, {}))
    assert out.status == Status.UNAVAILABLE_HERE
    assert "needs an NVIDIA GPU" in out.summary and "compile and disasm" in out.summary


def test_bad_options_are_refused_with_what_to_fix() -> None:
    with pytest.raises(ToolInputError, match="unknown ncu section 'Speed'"):
        tools.validate("profile", "cuda", ["a.cu"], {"sections": ["Speed"]})
    with pytest.raises(ToolInputError, match="not a regular expression"):
        tools.validate("profile", "cuda", ["a.cu"], {"kernel_filter": "("})
    with pytest.raises(ToolInputError, match="unknown check 'leakcheck'"):
        tools.validate("sanitize", "cuda", ["a.cu"], {"checks": ["leakcheck"]})
    with pytest.raises(ToolInputError, match="languages kernelbench, cuda"):
        tools.validate("profile", "triton", ["k.py"], {})
    with pytest.raises(ToolInputError, match="reference file"):
        tools.validate("sanitize", "kernelbench", ["new.py"], {})


def test_nsys_absent_is_a_note_not_a_failure(tmp_path: Path) -> None:
    from perfbox.tools import nsys_report
    from perfbox.tools.toolkit import find_binary

    if find_binary("nsys"):
        pytest.skip("nsys is installed here")
    summary = nsys_report.summarize(["true"], tmp_path, {}, 10)
    assert summary == {"available": False, "note": "nsys (Nsight Systems) is not installed here"}


# -- on a GPU node ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_profile_cuda_program_gives_per_kernel_metrics(tmp_path: Path) -> None:
    files = _cuda_program(tmp_path, "profile_kernels")
    out = run_tool_isolated(tmp_path, files, {"tool": "profile", "language": "cuda",
                                              "max_kernels": 2})
    assert out.status == Status.OK, out.summary
    kernels = out.report["kernels"]
    assert [k["name"].split("(")[0] for k in kernels] == ["stream_add", "fma_loop"]
    assert kernels[0]["bound"] == "memory" and kernels[0]["duration_us"] > 0
    assert "memory-bound" in out.summary


@pytest.mark.gpu
def test_profile_kernelbench_skips_warmup_and_filters(tmp_path: Path) -> None:
    files = _kernelbench(tmp_path)
    out = run_tool_isolated(tmp_path, files, {"tool": "profile", "language": "kernelbench",
                                              "warmup_calls": 3})
    assert out.status == Status.OK, out.summary
    assert 1 <= len(out.report["kernels"]) <= 4  # one forward: GEMM (+bias) and relu
    out = run_tool_isolated(tmp_path, files, {"tool": "profile", "language": "kernelbench",
                                              "kernel_filter": "no_such_kernel"})
    assert out.status == Status.OK and out.report.get("kernels", []) == []
    assert "No kernel was profiled" in out.summary


@pytest.mark.gpu
def test_sanitize_finds_the_planted_out_of_bounds_write(tmp_path: Path) -> None:
    files = _cuda_program(tmp_path, "bug_memcheck")
    out = run_tool_isolated(tmp_path, files, {"tool": "sanitize", "language": "cuda"})
    assert out.status == Status.RUNTIME_ERROR, out.summary
    error = out.report["runs"][0]["errors"][0]
    assert error["file"] == "bug_memcheck.cu" and error["line"] == 8
    assert "bug_memcheck.cu:8" in out.summary


@pytest.mark.gpu
def test_sanitize_racecheck_and_clean_kernelbench(tmp_path: Path) -> None:
    files = _cuda_program(tmp_path, "bug_racecheck")
    out = run_tool_isolated(tmp_path, files, {"tool": "sanitize", "language": "cuda",
                                              "checks": ["racecheck"]})
    assert out.status == Status.RUNTIME_ERROR and "race" in out.summary, out.summary
    clean = tmp_path / "kb"
    clean.mkdir()
    out = run_tool_isolated(clean, _kernelbench(clean), {"tool": "sanitize",
                                                         "language": "kernelbench"})
    assert out.status == Status.OK, out.summary
