"""Outputs beyond a float tensor must be judged too (red team, round 3): a complex output on
both parts, integer outputs (indices, counts) exactly, Python numbers returned by forward, and
small elements beside a few huge ones. Each was passed wrong before; each submission here is
wrong and must be WRONG_ANSWER, and the honest one beside it OK."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.tools.types import Status
from tests.security.problems import model_new, run

PROBLEMS = {
    "rfft": ("return torch.fft.rfft(x, dim=-1)", "torch.randn(64, 1024)",
             "y = torch.fft.rfft(x, dim=-1)\nreturn torch.complex(y.real, torch.zeros_like(y.real))"),
    "cumsum_int": ("return torch.cumsum(x, dim=1)",
                   "torch.randint(0, 100, (64, 4096), dtype=torch.int64)",
                   "return torch.cumsum(x, dim=1) + 7"),
    "argmax": ("return torch.argmax(x, dim=-1)", "torch.randn(128, 4096)",
               "i = torch.argmax(x, dim=-1)\nreturn torch.clamp(i + 1, max=x.shape[-1] - 1)"),
    "mse_item": ("return torch.mean((x - 1.0) ** 2).item()", "torch.randn(256, 1024)",
                 "return 12345.0"),
    "exp_range": ("return torch.exp(x)", "torch.randn(1024, 1024) * 5",
                  "keep = x > x.max() - 18.4\nreturn torch.where(keep, torch.exp(x), "
                  "torch.zeros_like(x))"),
}


def _reference(forward: str, inputs: str) -> str:
    return ("import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n"
                    "    def forward(self, x):\n" + f"        {forward}\n\n\n"
                    f"def get_inputs():\n    return [{inputs}]\n\n\n"
            "def get_init_inputs():\n    return []\n")


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_wrong_output_of_every_kind_is_caught(tmp_path: Path, name: str) -> None:
    forward, inputs, wrong = PROBLEMS[name]
    reference = _reference(forward, inputs)
    for body, status in ((wrong, Status.WRONG_ANSWER), (forward, Status.OK)):
        out = run(tmp_path, "check", reference, model_new("", body), num_input_sets=2)
        assert out.status == status, (name, body, out.summary)


def test_a_sparse_output_is_wrong_not_a_crash(tmp_path: Path) -> None:
    reference = _reference(*PROBLEMS["mse_item"][:2])
    prelude = ("from perfbox.tools.harness import wire as _w\n_orig = _w.plain\n"
               "_w.plain = lambda v: v if isinstance(v, torch.Tensor) and v.is_sparse "
               "else _orig(v)")
    source = model_new("", "return torch.zeros(2, 2).to_sparse()", prelude=prelude)
    out = run(tmp_path, "check", reference, source, num_input_sets=1)
    assert out.status in (Status.WRONG_ANSWER, Status.RUNTIME_ERROR), out.summary


def test_bench_refuses_a_problem_whose_output_is_not_a_tensor(tmp_path: Path) -> None:
    reference = _reference(*PROBLEMS["mse_item"][:2])
    out = run(tmp_path, "bench", reference, model_new("", PROBLEMS["mse_item"][0]))
    assert out.status == Status.REJECTED and "tensors" in out.error, out.summary
