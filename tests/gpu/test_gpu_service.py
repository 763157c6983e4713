"""The GPU path end to end: check and bench on device cuda through a real bwrap-sandboxed server
(GPU device nodes and the driver reach the sandbox; the job sees the GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kernelbench"
NEW = """
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x):
        return torch.relu(self.linear(x))
"""


def _kernelbench(tool: str, **options: object) -> pb.ToolRequest:
    files = {"reference.py": (FIXTURES / "reference.py").read_text(), "new.py": NEW}
    return make_request(tool, files, language="kernelbench", device="cuda", **options)


@pytest.mark.gpu
def test_check_on_cuda_in_the_sandbox(client: ToolClient) -> None:
    result = client.run(_kernelbench("check"))
    assert result.status == pb.OK, result.summary
    assert json_format.MessageToDict(result)["check"]["device"] == "cuda"


@pytest.mark.gpu
def test_bench_on_cuda_in_the_sandbox(client: ToolClient) -> None:
    result = client.run(_kernelbench("bench", time_budget_s=2.0))
    assert result.status == pb.OK, result.summary
    report = json_format.MessageToDict(result)["bench"]
    print(json.dumps(report, indent=1))
    assert report["device"] == "cuda" and float(report["speedup"]) > 0
