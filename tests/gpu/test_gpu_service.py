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
NEW = (Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" / "new.py").read_text()


# CUDA processes (the tool, the submission, the reference; ncu and its target) need more
# memory and threads than the CPU-sized defaults.
GPU_LIMITS = pb.Limits(wall_time_ms=300_000, memory_bytes=32 << 30, max_processes=1024)


def _kernelbench(tool: str, **options: object) -> pb.ToolRequest:
    files = {"reference.py": (FIXTURES / "reference.py").read_text(), "new.py": NEW}
    if tool in ("check", "bench"):
        options["device"] = "cuda"
    return make_request(tool, files, language="kernelbench", limits=GPU_LIMITS,
                        **options)  # type: ignore[arg-type]


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
    assert report["device"] == "cuda" and float(report["speedup"]) > 0


@pytest.mark.gpu
def test_profile_and_sanitize_in_the_sandbox(client: ToolClient) -> None:
    programs = FIXTURES.parent / "programs"
    result = client.run(make_request(
        "profile", {"profile_kernels.cu": (programs / "profile_kernels.cu").read_text()},
        language="cuda", max_kernels=2, limits=GPU_LIMITS))
    assert result.status == pb.OK, result.summary + result.stderr[-2000:]
    assert [k.bound for k in result.profile.kernels] == ["memory", "compute"]
    result = client.run(make_request(
        "sanitize", {"bug_memcheck.cu": (programs / "bug_memcheck.cu").read_text()},
        language="cuda", limits=GPU_LIMITS))
    assert result.status == pb.RUNTIME_ERROR, result.summary + result.stderr[-2000:]
    assert result.sanitize.runs[0].errors[0].line == 8
    result = client.run(_kernelbench("profile"))
    assert result.status == pb.OK and result.profile.kernels, result.summary


@pytest.mark.gpu
def test_bare_kernel_check_in_the_sandbox(client: ToolClient) -> None:
    bare = FIXTURES.parent / "bare"
    files = {"reference.py": (FIXTURES / "reference.py").read_text(),
             "linear_relu.cu": (bare / "linear_relu.cu").read_text()}
    spec = json.loads((bare / "linear_relu.launch.json").read_text())
    result = client.run(make_request("check", files, language="kernelbench", launch=spec,
                                     limits=GPU_LIMITS))
    assert result.status == pb.OK, result.summary + result.stderr[-2000:]


@pytest.mark.gpu
def test_default_limits_fit_a_cuda_job(client: ToolClient) -> None:
    """No limits in the request: the GPU node's defaults must hold a CUDA check."""
    files = {"reference.py": (FIXTURES / "reference.py").read_text(), "new.py": NEW}
    result = client.run(make_request("check", files, language="kernelbench", device="cuda"))
    assert result.status == pb.OK, result.summary + result.stderr[-2000:]
