"""A bare CUDA kernel as a ModelNew: NVRTC-compiled by CuPy (`RawModule`) and launched on
PyTorch's current stream as a launch spec (perfbox.tools.launch_spec) says, so check and bench
treat it exactly like a PyTorch submission. Runs in the submission's process only.

Tensor arguments are passed as raw device pointers (64-bit), which works for every dtype
(CuPy has no bfloat16); the tool makes inputs contiguous first, since a bare kernel indexes
flat memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfbox.tools import launch_spec

_SCALARS = {"i32": "int32", "i64": "int64", "f32": "float32", "f64": "float64"}


def cupy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def _function(code: str, kernel: str, options: tuple[str, ...]) -> Any:
    import cupy

    try:
        return cupy.RawModule(code=code, options=options).get_function(kernel)
    except cupy.cuda.driver.CUDADriverError:
        # a C++ (not extern "C") kernel: ask NVRTC for its lowered name
        module = cupy.RawModule(code=code, options=options, name_expressions=(kernel,))
        return module.get_function(kernel)


def build_model(source: Path, spec: dict[str, Any], params: dict[str, Any]) -> Any:
    """The nn.Module whose forward launches the kernel; compile errors raise here."""
    import torch

    launch_spec.validate(spec)
    options = ("-lineinfo", *[str(o) for o in spec.get("compile_options") or []])
    function = _function(source.read_text(), str(spec["kernel"]), options)

    class BareKernel(torch.nn.Module):
        def forward(self, *inputs: Any) -> Any:
            return _launch(function, spec, params, inputs)

    return BareKernel()


def _allocate(out: dict[str, Any], inputs: list[Any], shapes: dict[str, tuple[int, ...]],
              index: int) -> Any:
    import torch

    if out.get("like"):
        like = inputs[int(str(out["like"])[2:])]
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    shape = [int(launch_spec.evaluate(str(d), shapes, f"outputs[{index}].shape"))
             for d in out["shape"]]
    first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
    dtype = getattr(torch, out["dtype"]) if out.get("dtype") else (
        first.dtype if first is not None else torch.float32)
    return torch.empty(shape, dtype=dtype, device="cuda")


def _launch(function: Any, spec: dict[str, Any], params: dict[str, Any], raw: tuple[Any, ...]
            ) -> Any:
    import cupy
    import numpy
    import torch

    inputs = [x.contiguous() if isinstance(x, torch.Tensor) else x for x in raw]
    shapes = {f"in{i}": tuple(x.shape) for i, x in enumerate(inputs)
              if isinstance(x, torch.Tensor)}
    outputs = []
    for i, out in enumerate(spec["outputs"]):
        outputs.append(_allocate(out, inputs, shapes, i))
        shapes[f"out{i}"] = tuple(outputs[-1].shape)
    args: list[Any] = []
    for token in spec["args"]:
        token = str(token)
        if token.startswith(("in", "out")) and token[-1].isdigit() and ":" not in token:
            pool = inputs if token.startswith("in") else outputs
            tensor = pool[int(token[2 if token.startswith("in") else 3:])]
            args.append(numpy.uint64(tensor.data_ptr()))
        elif token.startswith("param:"):
            args.append(numpy.uint64(params[token[6:]].data_ptr()))
        else:
            kind, _, expr = token.partition(":")
            value = launch_spec.evaluate(expr, shapes, "args")
            args.append(getattr(numpy, _SCALARS[kind])(value))
    grid = tuple(int(launch_spec.evaluate(str(d), shapes, "grid")) for d in spec["grid"])
    block = tuple(int(launch_spec.evaluate(str(d), shapes, "block")) for d in spec["block"])
    shared = int(launch_spec.evaluate(str(spec.get("shared_mem_bytes") or "0"), shapes,
                                      "shared_mem_bytes"))
    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
        function(grid, block, tuple(args), shared_mem=shared)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def reference_params(reference: Any, init_inputs: list[Any], init_seed: int) -> dict[str, Any]:
    """Parameters and buffers of the reference Model built with the shared seed, on the GPU,
    contiguous: what `param:NAME` binds to."""
    import torch

    torch.manual_seed(init_seed)
    model = reference.Model(*init_inputs).cuda()
    named = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    return {name: t.detach().contiguous() for name, t in named.items()}
