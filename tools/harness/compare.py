"""Is an output the reference's? Element-wise and norm-wise, with tolerances that trivial
answers cannot slip under.

An absolute floor of 1e-4 lets `zeros_like` pass a softmax over 16,384 columns (every
probability is below 1e-4). So the element-wise test is |out - ref| <= tol * (|ref| + scale)
with `scale` the median magnitude of the reference's non-zero elements (not the RMS: a few huge
values of exp(5 x) made the RMS so large that 93% of the elements, left at zero, passed), and
beside it the norm-relative error ||out - ref|| / ||ref|| must be below tol too. Complex outputs
are compared as their real and imaginary parts; integer and boolean outputs (indices, counts,
masks) must be exact. A comparison also asks whether a trivial answer
(zeros, the reference's mean as a constant, an input of the same shape returned as is) would
have passed: when one would, this input set cannot tell a kernel from that answer.
"""

from __future__ import annotations

import math
from typing import Any

# dtype -> relative tolerance (element-wise, and norm-wise)
DEFAULT_TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2, "float64": 1e-7}
TRIVIAL_ANSWERS = ("zeros", "constant", "input")


def tolerances(options: dict[str, Any]) -> dict[str, float]:
    return {**DEFAULT_TOLERANCES, **{k: float(v) for k, v in
                                     dict(options.get("tolerances", {})).items()}}


def _passes(exp: Any, out: Any, tol: float) -> tuple[Any, dict[str, float]]:
    """(mask of bad elements, error figures) of `out` against `exp`, both float64."""
    import torch

    finite_exp = exp[torch.isfinite(exp) & (exp != 0)].abs()
    scale = float(finite_exp.median()) if finite_exp.numel() else 0.0
    nan_bad = torch.isnan(out) & ~torch.isnan(exp)
    inf_bad = torch.isinf(out) & ~(torch.isinf(exp) & (torch.sign(out) == torch.sign(exp)))
    finite = torch.isfinite(exp) & torch.isfinite(out)
    diff = torch.where(finite, (out - exp).abs(), torch.zeros_like(exp))
    bad = (finite & (diff > tol * (exp.abs() + scale))) | nan_bad | inf_bad
    bad = bad | (torch.isnan(exp) & ~torch.isnan(out)) | (torch.isinf(exp) & ~torch.isinf(out))
    ref_norm = float(torch.where(finite, exp, torch.zeros_like(exp)).norm())
    err_norm = float(diff.norm())
    norm_rel = err_norm / ref_norm if ref_norm > 0 else (0.0 if err_norm == 0 else math.inf)
    rel = diff / exp.abs().clamp_min(1e-12)
    return bad, {"max_abs_error": float(diff.max()) if diff.numel() else 0.0,
                 "max_rel_error": float(rel.max()) if rel.numel() else 0.0,
                 "norm_rel_error": norm_rel, "scale": scale}


def compare(expected: Any, got: Any, tol_for: dict[str, float], input_set: int, index: int
            ) -> dict[str, Any]:
    """One output against the reference's: an OutputCheck (proto-JSON) dict."""
    import torch

    entry: dict[str, Any] = {"input_set": input_set, "output_index": index, "passed": False}
    # a subclass could lie about its values; a meta, sparse, conjugated or negated tensor is
    # not a plain array of values either
    if type(got) is not torch.Tensor or got.device.type != "cpu" or \
            got.layout != torch.strided or got.is_conj() or got.is_neg():
        entry["problem"] = "type"
        return entry
    entry.update(shape=list(got.shape), expected_shape=list(expected.shape),
                 dtype=str(got.dtype).removeprefix("torch."),
                 expected_dtype=str(expected.dtype).removeprefix("torch."))
    if got.shape != expected.shape:
        entry["problem"] = "shape"
        return entry
    if got.dtype != expected.dtype:
        entry["problem"] = "dtype"
        return entry
    if not (expected.is_floating_point() or expected.is_complex()):
        return _exact(expected, got, entry)
    tol = tol_for.get(entry["expected_dtype"], tol_for.get("float32", 1e-4))
    if expected.is_complex():  # both parts: .double() would drop the imaginary one
        exp, out = torch.view_as_real(expected).double(), torch.view_as_real(got).double()
    else:
        exp, out = expected.double(), got.double()
    bad, figures = _passes(exp, out, tol)
    count = int(bad.sum())
    entry.update(max_abs_error=figures["max_abs_error"], max_rel_error=figures["max_rel_error"],
                 norm_rel_error=figures["norm_rel_error"],
                 mismatch_fraction=count / max(1, bad.numel()))
    if count:
        entry["first_mismatch_index"] = [int(i) for i in torch.nonzero(bad)[0].tolist()]
        entry["problem"] = ("nan" if bool((torch.isnan(out) & ~torch.isnan(exp)).any()) else
                            "inf" if bool((torch.isinf(out) & ~torch.isinf(exp)).any()) else
                            "values")
        return entry
    if not figures["norm_rel_error"] <= tol:
        entry["problem"] = "norm"
        return entry
    entry["passed"] = True
    return entry


def _exact(expected: Any, got: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """Integer and boolean outputs: every element equal."""
    import torch

    bad = expected != got
    count = int(bad.sum())
    diff = (expected.to(torch.int64) - got.to(torch.int64)).abs() if expected.numel() else bad
    entry.update(max_abs_error=float(diff.max()) if diff.numel() else 0.0, max_rel_error=0.0,
                 norm_rel_error=0.0 if not count else 1.0,
                 mismatch_fraction=count / max(1, bad.numel()))
    if count:
        entry["first_mismatch_index"] = [int(i) for i in torch.nonzero(bad)[0].tolist()]
        entry["problem"] = "values"
        return entry
    entry["passed"] = True
    return entry


def compare_value(expected: Any, got: Any, tol_for: dict[str, float]) -> str:
    """A non-tensor output (a Python number, string, None...): "" when it matches, else why.
    Floats within the float64 tolerance, everything else equal and of the same type."""
    if isinstance(expected, bool) or not isinstance(expected, (int, float)):
        if type(got) is not type(expected) or got != expected:
            return f"returned {type(got).__name__} {str(got)[:60]!r}, expected {str(expected)[:60]!r}"
        return ""
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"returned a {type(got).__name__}, expected a number"
    if isinstance(expected, int) and isinstance(got, int):
        return "" if got == expected else f"returned {got}, expected {expected}"
    tol = tol_for.get("float32", 1e-4)
    if math.isnan(expected):
        return "" if math.isnan(got) else f"returned {got}, expected nan"
    if not math.isfinite(expected) or not math.isfinite(got):
        return "" if got == expected else f"returned {got}, expected {expected}"
    return "" if abs(got - expected) <= tol * abs(expected) + 1e-12 else \
        f"returned {got!r}, expected {expected!r} (relative tolerance {tol:g})"


def trivial_matches(expected: Any, inputs: list[Any], tol_for: dict[str, float]) -> list[str]:
    """The trivial answers that would pass as this output: zeros, a constant (the reference's
    mean), or an input of the same shape and dtype returned unchanged."""
    import torch

    if type(expected) is not torch.Tensor or expected.numel() == 0 or \
            not (expected.is_floating_point() or expected.is_complex()):
        return []
    candidates: list[tuple[str, Any]] = [("zeros", torch.zeros_like(expected))]
    finite = expected[torch.isfinite(expected)]
    if finite.numel() and not expected.is_complex():
        candidates.append(("constant", torch.full_like(expected, float(finite.double().mean()))))
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.shape == expected.shape and x.dtype == expected.dtype:
            candidates.append(("input", x))
            break
    return [name for name, value in candidates
            if compare(expected, value.detach().cpu().contiguous(), tol_for, 0, 0)["passed"]]


def describe(entry: dict[str, Any]) -> str:
    where = f"output {entry['output_index']} of input set {entry['input_set']}"
    problem = entry.get("problem")
    if problem == "shape":
        return f"{where}: shape {entry['shape']}, expected {entry['expected_shape']}"
    if problem == "dtype":
        return f"{where}: dtype {entry['dtype']}, expected {entry['expected_dtype']}"
    if problem == "type":
        return f"{where}: not a plain tensor"
    if problem == "norm":
        return (f"{where}: norm-relative error {entry['norm_rel_error']:.3g} is above the "
                "tolerance (every element is close, but the output as a whole is not)")
    return (f"{where}: {entry['mismatch_fraction']:.1%} of elements outside tolerance "
            f"({problem}); max abs error {entry['max_abs_error']:.3g}, first at index "
            f"{entry.get('first_mismatch_index')}")


def finite_or_zero(x: float) -> float:
    return x if math.isfinite(x) else 0.0
