"""compile: real nvcc/ptxas and real Triton AOT, run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools.types import Status, ToolInputError, ToolRequest
from tests.tools.isolated import run_tool_isolated
from tests.conftest import SAMPLE_CU, TRITON_KERNEL

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run(tmp_path: Path, name: str, source: str, language: str, **options: object):
    (tmp_path / name).write_text(source)
    if language == "triton":  # the tool forks to import the module: not from pytest
        return run_tool_isolated(tmp_path, [name], {"tool": "compile", "language": language,
                                                    **options})
    return tools.run(ToolRequest("compile", language, [name], tmp_path, dict(options)))


def test_cuda_compile_reports_resources_per_arch(tmp_path: Path) -> None:
    out = run(tmp_path, "k.cu", SAMPLE_CU, "cuda", archs=["sm_90", "sm_80"])
    assert out.status == Status.OK, out.summary
    kernels = out.report["kernels"]
    assert [k["arch"] for k in kernels] == ["sm_90", "sm_80"]
    assert all(k["name"] == "_Z5scalePffi" and k["demangled"] == "scale(float*, float, int)"
               for k in kernels)
    assert all(k["registers"] > 0 for k in kernels)
    kinds = sorted((a["kind"], a["arch"]) for a in out.report["artifacts"])
    assert kinds == [("cubin", "sm_80"), ("cubin", "sm_90"), ("ptx", "sm_80"), ("ptx", "sm_90")]
    assert (tmp_path / "build" / "k.sm_90.cubin").read_bytes()[:4] == b"\x7fELF"


def test_cuda_shared_memory_and_spills_come_from_ptxas(tmp_path: Path) -> None:
    source = """
    __global__ void stage(float* x) {
      __shared__ float tile[512];
      tile[threadIdx.x] = x[threadIdx.x];
      __syncthreads();
      x[threadIdx.x] = tile[511 - threadIdx.x];
    }
    """
    out = run(tmp_path, "s.cu", source, "cuda")
    (kernel,) = out.report["kernels"]
    assert kernel["shared_bytes"] >= 512 * 4
    assert kernel["barriers"] == 1
    assert kernel["spill_store_bytes"] == 0


def test_cuda_error_has_file_line_and_column(tmp_path: Path) -> None:
    source = "__global__ void f(float* x) {\n  x[0] = undefined_name;\n}\n"
    out = run(tmp_path, "bad.cu", source, "cuda")
    assert out.status == Status.COMPILE_ERROR
    (diag,) = [d for d in out.report["diagnostics"] if d["severity"] == "error"]
    assert (diag["file"], diag["line"], diag["column"]) == ("bad.cu", 2, 10)
    assert "undefined_name" in diag["message"]
    assert "bad.cu:2:10" in out.summary


def test_cuda_defines_reach_the_compiler(tmp_path: Path) -> None:
    source = "#ifndef WIDTH\n#error WIDTH not set\n#endif\n__global__ void f(float* x) { x[WIDTH] = 1; }\n"
    assert run(tmp_path, "d.cu", source, "cuda").status == Status.COMPILE_ERROR
    assert run(tmp_path, "d.cu", source, "cuda", defines=["WIDTH=4"]).status == Status.OK


def test_cuda_header_files_are_usable(tmp_path: Path) -> None:
    (tmp_path / "common.cuh").write_text("#define SCALE 2.0f\n")
    (tmp_path / "k.cu").write_text('#include "common.cuh"\n__global__ void f(float* x) { x[0] *= SCALE; }\n')
    out = tools.run(ToolRequest("compile", "cuda", ["common.cuh", "k.cu"], tmp_path, {}))
    assert out.status == Status.OK, out.summary


@pytest.mark.parametrize("options, message", [
    ({"archs": ["sm_12"]}, "not supported"),
    ({"archs": ["ampere"]}, "sm_XY"),
    ({"defines": ["-o /etc/passwd"]}, "NAME or NAME=VALUE"),
])
def test_bad_options_are_rejected_with_what_to_fix(options: dict, message: str) -> None:
    with pytest.raises(ToolInputError, match=message):
        tools.validate("compile", "cuda", ["k.cu"], options)


def test_triton_compiles_ahead_of_time_without_a_gpu(tmp_path: Path) -> None:
    out = run(tmp_path, "kernel.py", TRITON_KERNEL, "triton", archs=["sm_90", "sm_80"],
              num_warps=8, include_artifacts=True)
    assert out.status == Status.OK, out.summary
    arches = [k["arch"] for k in out.report["kernels"]]
    assert arches == ["sm_90a", "sm_80"]
    assert all(k["num_warps"] == 8 and k["registers"] > 0 for k in out.report["kernels"])
    kinds = {a["kind"] for a in out.report["artifacts"]}
    assert {"ttir", "ttgir", "llir", "ptx", "cubin"} <= kinds
    ttgir = next(a for a in out.report["artifacts"] if a["kind"] == "ttgir")
    assert '"ttg.num-warps" = 8' in ttgir["text"]


def test_triton_signature_and_constants_are_honoured(tmp_path: Path) -> None:
    out = run(tmp_path, "kernel.py", TRITON_KERNEL, "triton",
              signature={"src_ptr": "*fp16", "dst_ptr": "*fp16"}, constants={"BLOCK": "256"},
              include_artifacts=True)
    assert out.status == Status.OK, out.summary
    ttir = next(a for a in out.report["artifacts"] if a["kind"] == "ttir")
    assert "!tt.ptr<f16>" in ttir["text"] and "256" in ttir["text"]


def test_triton_compile_error_points_at_the_source_line(tmp_path: Path) -> None:
    source = TRITON_KERNEL.replace("mask = offs < n", "mask = offs < n\n    y = tl.undefined_op(offs)")
    out = run(tmp_path, "kernel.py", source, "triton")
    assert out.status == Status.COMPILE_ERROR
    (diag,) = out.report["diagnostics"]
    line = source.splitlines().index("    y = tl.undefined_op(offs)") + 1
    assert (diag["file"], diag["line"]) == ("kernel.py", line)


def test_triton_syntax_error_is_located(tmp_path: Path) -> None:
    out = run(tmp_path, "kernel.py", "import triton\ndef broken(:\n", "triton")
    assert out.status == Status.COMPILE_ERROR
    assert out.report["diagnostics"][0]["line"] == 2


def test_triton_missing_constexpr_value_says_how_to_pass_it(tmp_path: Path) -> None:
    source = TRITON_KERNEL.replace("BLOCK: tl.constexpr = 128", "BLOCK: tl.constexpr")
    out = run(tmp_path, "kernel.py", source, "triton")
    assert out.status == Status.REJECTED
    assert "constants" in out.error and "BLOCK" in out.error


def test_triton_unknown_kernel_name_lists_the_real_ones(tmp_path: Path) -> None:
    out = run(tmp_path, "kernel.py", TRITON_KERNEL, "triton", kernel="nope")
    assert out.status == Status.REJECTED
    assert "copy_kernel" in out.error
