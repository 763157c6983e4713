"""Parsers of real nvcc/ptxas output (recorded from CUDA 13.0 on this project's machines)."""

from perfbox.tools.ptxas import parse_diagnostics, parse_ptxas_verbose

# `ptxas -arch=sm_90 -v k.ptx` (CUDA 13.0.88)
PTXAS_V = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z3addPKfS0_Pfi' for 'sm_90'
ptxas info    : Function properties for _Z3addPKfS0_Pfi
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 1 barriers, 1024 bytes smem
ptxas info    : Compile time = 20.293 ms
"""

# `nvcc -ptx -arch=sm_90 bad.cu` (CUDA 13.0.88)
NVCC_ERRORS = """bad.cu(4): error: expected a ";"
    x[i] = undefined_var;
    ^

bad.cu(3): warning #177-D: variable "i" was declared but never referenced
    int i = threadIdx.x
        ^

Remark: The warnings can be suppressed with "-diag-suppress <warning-number>"

1 error detected in the compilation of "bad.cu".
"""


def test_ptxas_verbose() -> None:
    (kernel,) = parse_ptxas_verbose(PTXAS_V)
    assert kernel == {"name": "_Z3addPKfS0_Pfi", "arch": "sm_90", "stack_frame_bytes": 0,
                      "spill_store_bytes": 0, "spill_load_bytes": 0, "registers": 12,
                      "barriers": 1, "shared_bytes": 1024}


def test_nvcc_diagnostics_with_columns() -> None:
    error, warning = parse_diagnostics(NVCC_ERRORS)
    assert error == {"file": "bad.cu", "line": 4, "column": 3, "severity": "error",
                     "message": 'expected a ";"'}
    assert (warning["severity"], warning["line"], warning["column"]) == ("warning", 3, 7)
