"""disasm: real cuobjdump on real cubins; the instruction-mix classifier."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools.sass import instruction_mix, opcodes, split_functions
from perfbox.tools.types import Status, ToolRequest
from tests.tools.isolated import run_tool_isolated
from tests.conftest import TRITON_KERNEL

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MMA_KERNEL = """
#include <mma.h>
using namespace nvcuda;
__global__ void mma16(const half* a, const half* b, float* c) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}
"""


def disasm(tmp_path: Path, name: str, source: str, language: str, **options: object):
    (tmp_path / name).write_text(source)
    if language == "triton":  # the tool forks to import the module: not from pytest
        return run_tool_isolated(tmp_path, [name], {"tool": "disasm", "language": language,
                                                    **options})
    return tools.run(ToolRequest("disasm", language, [name], tmp_path, dict(options)))


def test_tensor_core_kernel_shows_mma_instructions(tmp_path: Path) -> None:
    out = disasm(tmp_path, "mma.cu", MMA_KERNEL, "cuda", include_sass=True, include_ptx=True,
                 compile={"archs": ["sm_80"]})
    assert out.status == Status.OK, out.summary
    (kernel,) = out.report["kernels"]
    assert kernel["mix"]["tensor_core"] >= 1
    assert kernel["mix"]["opcodes"].get("HMMA", 0) >= 1
    assert "HMMA" in kernel["sass"] and ".entry" in kernel["ptx"]
    assert "tensor-core ops" in out.summary


def test_classes_add_up_to_the_total(tmp_path: Path) -> None:
    out = disasm(tmp_path, "kernel.py", TRITON_KERNEL, "triton")
    (kernel,) = out.report["kernels"]
    mix = kernel["mix"]
    classes = [k for k in mix if k not in ("total", "opcodes")]
    assert sum(mix[k] for k in classes) == mix["total"] == sum(mix["opcodes"].values())
    assert mix["global_memory"] >= 2  # one load, one store at least


def test_split_and_classify_a_listing() -> None:
    listing = """
\tcode for sm_90
\t\tFunction : _Z1fPf
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   HFMA2.MMA R5, -RZ, RZ, 1.875, 0 ;
        /*0020*/              @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   HGMMA.64x128x16.F32 gdesc[UR4], RZ, !UPT ;
        /*0040*/                   STL [R1], R4 ;
        /*0050*/                   EXIT ;
        /*0060*/                   NOP;
\t\tFunction : g
        /*0000*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
"""
    functions = split_functions(listing)
    assert list(functions) == ["_Z1fPf", "g"]
    counts = opcodes(functions["_Z1fPf"])
    assert counts == Counter({"LDC": 1, "MOV": 1, "LDG": 1, "HGMMA": 1, "STL": 1, "EXIT": 1})
    mix = instruction_mix(counts)
    assert (mix["constant_memory"], mix["move"], mix["global_memory"], mix["tensor_core"],
            mix["local_memory"], mix["control"], mix["total"]) == (1, 1, 1, 1, 1, 1, 6)
    assert instruction_mix(opcodes(functions["g"]))["sync"] == 1
