"""Bare CUDA kernels with a launch spec: the spec's validation and expressions everywhere, the
clear refusal without a GPU, and (on a GPU node) NVRTC + CuPy launches judged by check and
timed by bench like any ModelNew."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools import launch_spec
from perfbox.tools.harness.request_policy import gpu_present
from perfbox.tools.types import Status, ToolInputError
from tests.tools.isolated import run_tool_isolated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPEC = json.loads((FIXTURES / "bare" / "linear_relu.launch.json").read_text())
KERNEL = (FIXTURES / "bare" / "linear_relu.cu").read_text()


def _workspace(tmp_path: Path, kernel: str = KERNEL) -> list[str]:
    shutil.copy(FIXTURES / "kernelbench" / "reference.py", tmp_path / "reference.py")
    (tmp_path / "linear_relu.cu").write_text(kernel)
    return ["linear_relu.cu", "reference.py"]


def test_expressions_are_arithmetic_over_shapes_only() -> None:
    shapes = {"in0": (16, 32), "out0": (16, 32)}
    assert launch_spec.evaluate("ceil_div(in0.numel, 256)", shapes) == 2
    assert launch_spec.evaluate("max(in0.shape[-1] // 8, 1) * 3", shapes) == 12
    for bad in ('__import__("os").system("id")', "in0.__class__", "open", "in0.shape.x",
                "lambda: 1", "[1][0]", "in0.numel()"):
        with pytest.raises(ToolInputError, match="launch spec"):
            launch_spec.evaluate(bad, shapes)
    with pytest.raises(ToolInputError, match="in3 is not a tensor"):
        launch_spec.evaluate("in3.numel", shapes)


def test_spec_validation_says_what_to_fix() -> None:
    launch_spec.validate(SPEC)
    cases = [({"kernel": "not a name"}, "kernel must name"),
             ({"grid": []}, "grid takes 1 to 3"),
             ({"args": ["in0", "out1"]}, "only 1 outputs"),
             ({"args": ["u8:3"]}, "is not inK, outK"),
             ({"outputs": [{"dtype": "float32"}]}, "give like or shape"),
             ({"outputs": [{"like": "out0"}]}, "like must be an input"),
             ({"outputs": [{"like": "in0", "dtype": "complex64"}]}, "dtype must be one of")]
    for change, message in cases:
        with pytest.raises(ToolInputError, match=message):
            launch_spec.validate({**SPEC, **change})
    with pytest.raises(ToolInputError, match="device cuda only"):
        tools.validate("check", "kernelbench", ["k.cu", "reference.py"],
                       {"launch": SPEC, "device": "cpu"})
    # the submission is the .cu file when a launch spec is given
    tools.validate("check", "kernelbench", ["k.cu", "reference.py"], {"launch": SPEC})


@pytest.mark.skipif(gpu_present(), reason="this node has a GPU")
def test_without_a_gpu_a_bare_kernel_is_unavailable_here(tmp_path: Path) -> None:
    files = _workspace(tmp_path)
    out = run_tool_isolated(tmp_path, files, {"tool": "check", "launch": SPEC})
    assert out.status == Status.UNAVAILABLE_HERE and "needs a GPU" in out.summary


@pytest.mark.gpu
def test_bare_kernel_checks_ok_with_reference_parameters(tmp_path: Path) -> None:
    out = run_tool_isolated(tmp_path, _workspace(tmp_path), {"tool": "check", "launch": SPEC})
    assert out.status == Status.OK, out.summary
    assert out.report["device"] == "cuda" and out.report["num_input_sets"] == 5


@pytest.mark.gpu
def test_bare_kernel_wrong_and_broken(tmp_path: Path) -> None:
    wrong = KERNEL.replace("acc > 0.0f ? acc : 0.0f", "acc")  # relu forgotten
    out = run_tool_isolated(tmp_path, _workspace(tmp_path, wrong),
                            {"tool": "check", "launch": SPEC})
    assert out.status == Status.WRONG_ANSWER, out.summary
    broken = tmp_path / "broken"
    broken.mkdir()
    out = run_tool_isolated(broken, _workspace(broken, KERNEL.replace("acc +=", "acc +== ")),
                            {"tool": "check", "launch": SPEC})
    assert out.status == Status.COMPILE_ERROR and "NVRTC" in out.summary, out.summary


@pytest.mark.gpu
def test_bare_kernel_is_benchmarked_against_the_reference(tmp_path: Path) -> None:
    out = run_tool_isolated(tmp_path, _workspace(tmp_path),
                            {"tool": "bench", "launch": SPEC, "time_budget_s": 2.0})
    assert out.status == Status.OK, out.summary
    assert out.report["clock"] == "cuda-events" and out.report["speedup"] > 0
