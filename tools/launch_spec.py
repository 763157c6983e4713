"""A launch spec: how to run a bare CUDA `__global__` kernel on a KernelBench problem's inputs,
so a kernel need not be wrapped in PyTorch. The spec names the kernel, the grid and block, and
binds each kernel argument:

    {"kernel": "add",                          # extern "C" name (or the mangled one)
     "grid": ["ceil_div(in0.numel, 256)"],     # 1-3 integer expressions
     "block": ["256"],
     "args": ["in0", "in1", "out0", "i32:in0.numel"],
     "outputs": [{"like": "in0"}]}             # or {"shape": ["in0.shape[0]", "64"],
                                               #     "dtype": "float32"}

Argument tokens: `inK` (the K-th input of get_inputs), `outK` (the K-th output, allocated by
the tool as `outputs` says), `param:NAME` (a parameter or buffer of the reference Model built
with the same seed, e.g. `param:linear.weight`), and typed scalars `i32:EXPR`, `i64:EXPR`,
`f32:EXPR`, `f64:EXPR`. Expressions are integer/float arithmetic (+ - * / // % and
`ceil_div`, `min`, `max`) over literals and `inK.numel`, `inK.shape[D]`; nothing else parses,
so a spec can never run code.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any, Callable, Mapping

from perfbox.tools.types import ToolInputError

SCALAR_TYPES = ("i32", "i64", "f32", "f64")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "int8", "uint8", "bool")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TENSOR_REF = re.compile(r"^(in|out)(\d+)$")
_PARAM = re.compile(r"^param:[A-Za-z_][A-Za-z0-9_.]*$")
_FUNCS: dict[str, Callable[..., float]] = {
    "ceil_div": lambda a, b: -(-int(a) // int(b)), "min": min, "max": max}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}
MAX_EXPRESSION_CHARS = 200


def _check_expr(text: str, where: str) -> ast.expr:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(f"launch spec {where}: expression longer than "
                             f"{MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ToolInputError(f"launch spec {where}: {text!r} is not an expression") from e
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Constant,
                               ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.Load,
                               *_BINOPS))
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            ok = False
        if isinstance(node, ast.Name) and not (_TENSOR_REF.match(node.id) or node.id in _FUNCS):
            ok = False
        if isinstance(node, ast.Attribute) and node.attr not in ("numel", "shape"):
            ok = False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name)
                                               and node.func.id in _FUNCS and not node.keywords):
            ok = False
        if not ok:
            raise ToolInputError(f"launch spec {where}: {text!r} may use numbers, + - * / // %, "
                                 "ceil_div/min/max and inK.numel / inK.shape[D] only")
    return tree


def evaluate(text: str, shapes: Mapping[str, tuple[int, ...]], where: str = "expression"
             ) -> float:
    """The value of a spec expression; `shapes` maps "in0", "out1"... to tensor shapes."""
    return _eval(_check_expr(text, where), shapes, where)


def _eval(node: ast.expr, shapes: Mapping[str, tuple[int, ...]], where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, shapes, where)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, shapes, where),
                                      _eval(node.right, shapes, where))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCS[node.func.id](*[_eval(a, shapes, where) for a in node.args])
    if isinstance(node, ast.Attribute) and node.attr == "numel":
        return math.prod(_shape(node.value, shapes, where))
    if isinstance(node, ast.Subscript):
        if not (isinstance(node.value, ast.Attribute) and node.value.attr == "shape"):
            raise ToolInputError(f"launch spec {where}: only inK.shape[D] may be indexed")
        shape = _shape(node.value.value, shapes, where)
        index = int(_eval(node.slice, shapes, where))
        if not -len(shape) <= index < len(shape):
            raise ToolInputError(f"launch spec {where}: shape index {index} out of range for "
                                 f"a {len(shape)}-d tensor")
        return shape[index]
    raise ToolInputError(f"launch spec {where}: cannot evaluate {ast.unparse(node)!r}")


def _shape(node: ast.expr, shapes: Mapping[str, tuple[int, ...]], where: str) -> tuple[int, ...]:
    if not isinstance(node, ast.Name) or node.id not in shapes:
        name = ast.unparse(node)
        raise ToolInputError(f"launch spec {where}: {name} is not a tensor of this call "
                             f"(have {', '.join(shapes) or 'none'})")
    return shapes[node.id]


def validate(spec: Mapping[str, Any]) -> None:
    """Everything checkable before running: raises ToolInputError saying what to fix."""
    kernel = str(spec.get("kernel") or "")
    if not _IDENTIFIER.match(kernel):
        raise ToolInputError("launch spec: kernel must name the __global__ function "
                             f"(an identifier), got {kernel!r}")
    for key in ("grid", "block"):
        dims = list(spec.get(key) or [])
        if not 1 <= len(dims) <= 3:
            raise ToolInputError(f"launch spec: {key} takes 1 to 3 expressions, got {len(dims)}")
        for i, dim in enumerate(dims):
            _check_expr(str(dim), f"{key}[{i}]")
    if spec.get("shared_mem_bytes"):
        _check_expr(str(spec["shared_mem_bytes"]), "shared_mem_bytes")
    outputs = list(spec.get("outputs") or [])
    if not outputs:
        raise ToolInputError("launch spec: outputs must describe at least one output tensor")
    for i, out in enumerate(outputs):
        if out.get("like"):
            if not re.match(r"^in\d+$", str(out["like"])):
                raise ToolInputError(f"launch spec outputs[{i}]: like must be an input (inK)")
        else:
            for j, dim in enumerate(out.get("shape") or []):
                _check_expr(str(dim), f"outputs[{i}].shape[{j}]")
            if not out.get("shape"):
                raise ToolInputError(f"launch spec outputs[{i}]: give like or shape")
        if out.get("dtype") and out["dtype"] not in DTYPES:
            raise ToolInputError(f"launch spec outputs[{i}]: dtype must be one of "
                                 f"{', '.join(DTYPES)}")
    args = list(spec.get("args") or [])
    if not args:
        raise ToolInputError("launch spec: args must bind every kernel argument")
    for i, arg in enumerate(args):
        arg = str(arg)
        match = _TENSOR_REF.match(arg)
        if match:
            if match[1] == "out" and int(match[2]) >= len(outputs):
                raise ToolInputError(f"launch spec args[{i}]: {arg} but only {len(outputs)} "
                                     "outputs are described")
            continue
        if _PARAM.match(arg):
            continue
        kind, _, expr = arg.partition(":")
        if kind not in SCALAR_TYPES or not expr:
            raise ToolInputError(f"launch spec args[{i}]: {arg!r} is not inK, outK, param:NAME "
                                 f"or a typed scalar ({', '.join(SCALAR_TYPES)}:EXPR)")
        _check_expr(expr, f"args[{i}]")
