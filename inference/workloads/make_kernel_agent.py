"""Writes kernel_agent.json: replayable trajectories of a kernel-optimisation agent.

Each trajectory is a system prompt, a task, and assistant turns of reasoning that end in one
tool call (Hermes-style `<tool_call>{json}</tool_call>`) or in the final answer. The kernels are
real: the tools really compile, disassemble and check them. Two workloads:

- `kernel_agent.json`: compile, disasm, compile, check, answer (tools of a fraction of a second:
  T is small next to generation).
- `kernel_agent_tools.json`: check, bench, check, bench, answer with short reasoning (the check
  and bench run the module for seconds: T comparable to G, as on a GPU node where decode is fast
  and tools are slow).

Re-run after editing the texts:

    python inference/workloads/make_kernel_agent.py
"""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = ("You are a GPU kernel engineer. You write CUDA kernels and PyTorch modules, and you "
          "call tools to compile, disassemble and check them before you answer. Call a tool "
          "with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.")

PROBLEMS = {
    "scale_shift": {
        "task": "Write a fast kernel for y = a * x + b over a float32 vector of 1M elements, "
                "then a PyTorch ModelNew that matches the reference.",
        "reference": "import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n"
                     "    def forward(self, x):\n        return 2.5 * x + 0.5\n\n\n"
                     "def get_inputs():\n    return [torch.randn(4096)]\n\n\n"
                     "def get_init_inputs():\n    return []\n",
        "v1": "__global__ void scale_shift(const float* x, float* y, float a, float b, int n) {\n"
              "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
              "  if (i < n) y[i] = a * x[i] + b;\n}\n",
        "v2": "__global__ void scale_shift(const float4* __restrict__ x, float4* __restrict__ y,\n"
              "                            float a, float b, int n4) {\n"
              "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
              "  if (i < n4) {\n    float4 v = x[i];\n"
              "    y[i] = make_float4(fmaf(a, v.x, b), fmaf(a, v.y, b), fmaf(a, v.z, b), "
              "fmaf(a, v.w, b));\n  }\n}\n",
        "model_new": "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
                     "    def forward(self, x):\n        return torch.addcmul(torch.full_like(x, "
                     "0.5), x, torch.full_like(x, 2.5))\n",
    },
    "relu": {
        "task": "Write a ReLU kernel for a large float32 tensor and a ModelNew for it; check it "
                "against the reference.",
        "reference": "import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n"
                     "    def forward(self, x):\n        return torch.relu(x)\n\n\n"
                     "def get_inputs():\n    return [torch.randn(64, 256)]\n\n\n"
                     "def get_init_inputs():\n    return []\n",
        "v1": "__global__ void relu(const float* x, float* y, int n) {\n"
              "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
              "  if (i < n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;\n}\n",
        "v2": "__global__ void relu(const float* __restrict__ x, float* __restrict__ y, int n) {\n"
              "  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;\n"
              "       i += gridDim.x * blockDim.x)\n    y[i] = fmaxf(x[i], 0.0f);\n}\n",
        "model_new": "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
                     "    def forward(self, x):\n        return x.clamp_min(0.0)\n",
    },
    "row_sum": {
        "task": "Write a kernel that sums each row of a 1024x1024 float32 matrix, using shared "
                "memory, and a ModelNew that matches torch.sum(x, dim=1).",
        "reference": "import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n"
                     "    def forward(self, x):\n        return torch.sum(x, dim=1)\n\n\n"
                     "def get_inputs():\n    return [torch.randn(128, 256)]\n\n\n"
                     "def get_init_inputs():\n    return []\n",
        "v1": "__global__ void row_sum(const float* x, float* out, int cols) {\n"
              "  __shared__ float partial[256];\n  int row = blockIdx.x, t = threadIdx.x;\n"
              "  float acc = 0.0f;\n  for (int c = t; c < cols; c += blockDim.x) "
              "acc += x[row * cols + c];\n  partial[t] = acc;\n  __syncthreads();\n"
              "  for (int s = blockDim.x / 2; s > 0; s >>= 1) {\n"
              "    if (t < s) partial[t] += partial[t + s];\n    __syncthreads();\n  }\n"
              "  if (t == 0) out[row] = partial[0];\n}\n",
        "v2": "__global__ void row_sum(const float* __restrict__ x, float* __restrict__ out, "
              "int cols) {\n  int row = blockIdx.x, t = threadIdx.x;\n  float acc = 0.0f;\n"
              "  for (int c = t; c < cols; c += blockDim.x) acc += x[row * cols + c];\n"
              "  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);\n"
              "  __shared__ float warp_sums[32];\n  if (t % 32 == 0) warp_sums[t / 32] = acc;\n"
              "  __syncthreads();\n  if (t < 32) {\n"
              "    acc = t < blockDim.x / 32 ? warp_sums[t] : 0.0f;\n"
              "    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);\n"
              "    if (t == 0) out[row] = acc;\n  }\n}\n",
        "model_new": "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
                     "    def forward(self, x):\n        return x.sum(dim=1)\n",
    },
    "softplus": {
        "task": "Write a numerically stable softplus kernel, log(1 + exp(x)), and a ModelNew "
                "that matches torch.nn.functional.softplus.",
        "reference": "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
                     "class Model(nn.Module):\n    def forward(self, x):\n"
                     "        return F.softplus(x)\n\n\ndef get_inputs():\n"
                     "    return [torch.randn(64, 512) * 4]\n\n\ndef get_init_inputs():\n"
                     "    return []\n",
        "v1": "__global__ void softplus(const float* x, float* y, int n) {\n"
              "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
              "  if (i < n) y[i] = logf(1.0f + expf(x[i]));\n}\n",
        "v2": "__global__ void softplus(const float* __restrict__ x, float* __restrict__ y, "
              "int n) {\n  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) {\n"
              "    float v = x[i];\n    y[i] = v > 20.0f ? v : log1pf(__expf(v));\n  }\n}\n",
        "model_new": "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
                     "    def forward(self, x):\n        return torch.where(x > 20.0, x, "
                     "torch.log1p(torch.exp(x)))\n",
    },
}

REASONING = {
    "compile_v1": "Let me start with the simplest correct version: one thread per element, a "
                  "bounds check, and no tricks. Before I optimise anything I want to see how "
                  "many registers it uses and whether anything spills, so I will compile it for "
                  "sm_90 first and read the ptxas report.",
    "disasm_v1": "It compiled cleanly. The register count is low, which is good for occupancy. "
                 "Now I want to look at the SASS to see what the memory instructions are: if "
                 "the loads are 32-bit LDG.E instructions, each thread moves only four bytes "
                 "per instruction and the kernel will be bound by instruction issue rather "
                 "than by DRAM bandwidth. Let me disassemble it and look at the instruction mix.",
    "compile_v2": "The instruction mix shows scalar global loads and stores and some integer "
                  "address arithmetic per element. A better version should move more bytes "
                  "per instruction and keep the arithmetic in fused multiply-adds. I will "
                  "rewrite it with restrict pointers and the improved structure, then compile "
                  "again to confirm that the register count stays low and nothing spills.",
    "check": "The second version compiles with no spills. Before I claim anything about speed I "
             "need to be sure the module is numerically identical to the reference on random "
             "inputs, including the edge cases of the tolerance. I will submit the ModelNew "
             "implementation to the checker against the reference problem.",
    "final": "The checker accepted the implementation on all the random input sets, and the "
             "compiled kernel uses few registers with no spills. Final answer: the vectorised "
             "kernel above together with the ModelNew module, which matches the reference "
             "within tolerance.",
}


def _call(name: str, arguments: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def trajectory(name: str, problem: dict) -> dict:
    turns = [
        REASONING["compile_v1"] + "\n" + _call("compile", {"file": f"{name}.cu",
                                                           "source": problem["v1"],
                                                           "arch": "sm_90"}),
        REASONING["disasm_v1"] + "\n" + _call("disasm", {"file": f"{name}.cu",
                                                         "source": problem["v1"],
                                                         "arch": "sm_90"}),
        REASONING["compile_v2"] + "\n" + _call("compile", {"file": f"{name}.cu",
                                                           "source": problem["v2"],
                                                           "arch": "sm_90"}),
        REASONING["check"] + "\n" + _call("check", {"problem": name,
                                                    "submission": problem["model_new"]}),
        REASONING["final"],
    ]
    return {"id": name, "system": SYSTEM, "task": problem["task"], "turns": turns}


# a second ModelNew per problem: the tool-heavy agent checks and times two candidates
MODEL_NEW_V2 = {
    "scale_shift": "return x * 2.5 + 0.5",
    "relu": "return torch.relu(x)",
    "row_sum": "return torch.einsum('ij->i', x)",
    "softplus": "return torch.nn.functional.softplus(x)",
}

TOOLS_REASONING = {
    "check_v1": "First the candidate ModelNew: does it match the reference?",
    "bench_v1": "It passes. Now time it against the reference.",
    "check_v2": "Let me try a second form and check it too.",
    "bench_v2": "Correct again; time this one as well.",
    "final": "Both forms are correct; I keep the faster one as my answer.",
}


def model_new_v2(name: str) -> str:
    return ("import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
            f"    def forward(self, x):\n        {MODEL_NEW_V2[name]}\n")


def tools_trajectory(name: str, problem: dict) -> dict:
    """check and bench twice: every call runs the submission for seconds."""
    v1, v2 = problem["model_new"], model_new_v2(name)
    turns = [
        TOOLS_REASONING["check_v1"] + "\n" + _call("check", {"problem": name, "submission": v1}),
        TOOLS_REASONING["bench_v1"] + "\n" + _call("bench", {"problem": name, "submission": v1}),
        TOOLS_REASONING["check_v2"] + "\n" + _call("check", {"problem": name, "submission": v2}),
        TOOLS_REASONING["bench_v2"] + "\n" + _call("bench", {"problem": name, "submission": v2}),
        TOOLS_REASONING["final"],
    ]
    return {"id": name, "system": SYSTEM, "task": problem["task"], "turns": turns}


def write(name: str, description: str, make: object) -> None:
    data = {
        "description": description,
        "tool_call_format": {"start_tag": "<tool_call>", "end_tag": "</tool_call>"},
        "problems": {n: {"reference": p["reference"]} for n, p in PROBLEMS.items()},
        "trajectories": [make(n, p) for n, p in PROBLEMS.items()],  # type: ignore[operator]
    }
    out = Path(__file__).with_name(name)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out} ({len(data['trajectories'])} trajectories)")


def main() -> None:
    write("kernel_agent.json", "Kernel-optimisation agent trajectories (compile, disasm, "
          "compile, check, answer) over real kernels; replayed with forced decoding.",
          trajectory)
    write("kernel_agent_tools.json", "Tool-heavy kernel-agent trajectories (check, bench, "
          "check, bench, answer; short reasoning) over real problems; replayed with forced "
          "decoding.", tools_trajectory)


if __name__ == "__main__":
    main()
