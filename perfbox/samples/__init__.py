"""Kernels bundled with perfbox for the demo and the tests."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
VECTOR_ADD_CU = SAMPLES_DIR / "vector_add.cu"
SOFTMAX_PY = SAMPLES_DIR / "softmax.py"
