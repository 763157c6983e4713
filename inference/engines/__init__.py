"""Engine implementations: llama.cpp (embedded default, CPU) and, on GPU nodes, vLLM."""
