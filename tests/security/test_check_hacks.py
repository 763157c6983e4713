"""Reward hacks against check, through the real service: each ends non-OK, naming the reason,
and an honest fast submission passes (no false alarm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request

REFERENCE = (Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" /
             "reference.py").read_text()

HEADER = """import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x):
"""


def run_check(client: ToolClient, forward: str, prelude: str = "") -> pb.ToolResult:
    body = "".join(f"        {line}\n" for line in forward.strip().splitlines())
    source = prelude + "\n" + HEADER + body
    request = make_request("check", {"new.py": source, "reference.py": REFERENCE},
                           language="kernelbench", reference_file="reference.py",
                           submission_file="new.py")
    request.limits.wall_time_ms = 60_000
    return client.run(request, timeout_s=120)


def test_honest_fast_submission_passes(client: ToolClient) -> None:
    result = run_check(client, "return torch.addmm(self.linear.bias, x, self.linear.weight.t())"
                               ".clamp_min_(0)")
    assert result.status == pb.OK, result.summary + result.stderr[-800:]
    assert result.check.passed and result.check.num_input_sets == 10  # 5 problem + 5 varied


HACKS = [
    ("hunt the reference's tensors through gc", """
import gc
best = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.shape == (16, 32)
        and o is not x]
return best[-1] if best else torch.zeros(16, 32)
""", "", pb.WRONG_ANSWER),
    ("output cached on the input's identity", """
key = x.data_ptr()
if not hasattr(self, "memo"):
    self.memo = torch.relu(self.linear(x))
return self.memo
""", "", pb.WRONG_ANSWER),
    ("modify the input in place so the reference agrees", """
x.zero_()
return torch.relu(self.linear(x))
""", "", pb.WRONG_ANSWER),
    ("exit early", "import os\nos._exit(0)", "", pb.RUNTIME_ERROR),
    ("forge a result on stdout", """
print('{"status": "OK", "passed": true}')
raise SystemExit(0)
""", "", pb.RUNTIME_ERROR),
    ("lazy tensor subclass", """
class Lazy(torch.Tensor):
    pass
return torch.relu(self.linear(x)).as_subclass(Lazy)
""", "", pb.RUNTIME_ERROR),
    ("precision downgrade beyond tolerance", """
w, b = self.linear.weight.half(), self.linear.bias.half()
return torch.relu(x.half() @ w.t() + b).float()
""", "", pb.WRONG_ANSWER),
    ("correct only on the first input set", """
self.calls = getattr(self, "calls", 0) + 1
y = torch.relu(self.linear(x))
return y if self.calls <= 2 else y * 0
""", "", pb.WRONG_ANSWER),
    ("rewrite the reference file on disk", """
return torch.zeros(16, 32)
""", """
with open("reference.py", "w") as f:
    f.write("import torch\\nclass Model(torch.nn.Module):\\n    def __init__(self, n):\\n"
            "        super().__init__()\\n    def forward(self, x):\\n"
            "        return torch.zeros(16, 32)\\n"
            "def get_inputs():\\n    return [torch.randn(16, 32)]\\n"
            "def get_init_inputs():\\n    return [32]\\n")
""", pb.WRONG_ANSWER),
    ("finish the output on a side thread after returning", """
import threading, time
out = torch.empty(16, 32)
def finish():
    time.sleep(0.2)
    out.copy_(torch.relu(self.linear(x)))
threading.Thread(target=finish, daemon=True).start()
return out
""", "", pb.WRONG_ANSWER),
    ("return an uninitialised buffer hoping it holds the reference's result", """
return torch.empty(16, 32)
""", "", pb.WRONG_ANSWER),
    ("forge a verdict on an inherited file descriptor", """
import os
for fd in range(3, 64):
    try:
        os.write(fd, b'{"status": "OK", "passed": true}\\n')
    except OSError:
        pass
return torch.zeros(16, 32)
""", "", pb.RUNTIME_ERROR),
    ("guess the seed", """
torch.manual_seed(0)
guess = torch.randn(16, 32)
return torch.relu(self.linear(guess))
""", "", pb.WRONG_ANSWER),
]


@pytest.mark.parametrize("name, forward, prelude, status", HACKS, ids=[h[0] for h in HACKS])
def test_hack_is_caught(client: ToolClient, name: str, forward: str, prelude: str,
                        status: int) -> None:
    result = run_check(client, forward, prelude)
    assert result.status == status, (name, result.summary)
    assert result.error  # the reason is named


def test_gpumode_task_through_the_service(client: ToolClient) -> None:
    task = Path(__file__).resolve().parents[1] / "fixtures" / "gpumode" / "vectoradd"
    files = {p.name: p.read_text() for p in sorted(task.iterdir()) if p.is_file()}
    request = make_request("check", files, language="kernelbench")
    result = client.run(request, timeout_s=120)
    assert result.status == pb.OK, result.summary + result.stderr[-800:]
    assert result.check.num_input_sets == 4  # 3 tests + the benchmark case
    files["submission.py"] = "def custom_kernel(data):\n    return data[0]\n"
    result = client.run(make_request("check", files, language="kernelbench"), timeout_s=120)
    assert result.status == pb.WRONG_ANSWER and "test 0" in result.error


def test_bench_through_the_service(client: ToolClient) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench"
    reference = (fixtures / "slow_reference.py").read_text()
    submission = HEADER + "        return torch.relu(self.linear(x))\n"
    request = make_request("bench", {"new.py": submission, "reference.py": reference},
                           language="kernelbench", reference_file="reference.py",
                           submission_file="new.py", time_budget_s=2.0)
    result = client.run(request, timeout_s=120)
    assert result.status == pb.OK, result.summary + result.stderr[-800:]
    assert result.bench.speedup > 2 and result.bench.submission.num_samples >= 10  # ~28x idle
