"""Bad input gets INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a message that says what to fix,
and the server stays up."""

from __future__ import annotations

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.limits import MAX_SOURCE_BYTES
from tests.conftest import SAMPLE_CU, cuda_request


def _with(**changes: object) -> pb.ToolRequest:
    request = cuda_request()
    for key, value in changes.items():
        if key == "name":
            request.files[0].name = value
        elif key == "content":
            request.files[0].content = value
        elif key == "archs":
            request.compile.archs[:] = value
        elif key == "wall":
            request.limits.wall_time_ms = value
        else:
            setattr(request, key, value)
    return request


CASES = [
    ("unknown tool", _with(tool="optimize"), grpc.StatusCode.INVALID_ARGUMENT, "compile, disasm"),
    ("no language", _with(language=pb.LANGUAGE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT,
     "LANGUAGE_CUDA"),
    ("dot-dot name", _with(name="../k.cu"), grpc.StatusCode.INVALID_ARGUMENT, ".."),
    ("absolute name", _with(name="/etc/k.cu"), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
    ("empty name", _with(name=""), grpc.StatusCode.INVALID_ARGUMENT, "empty name"),
    ("unnormalised", _with(name="a//k.cu"), grpc.StatusCode.INVALID_ARGUMENT, "'a/k.cu'"),
    ("empty source", _with(content="  \n"), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("oversized", _with(content="x" * (MAX_SOURCE_BYTES + 1)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    ("unknown arch", _with(archs=["sm_99"]), grpc.StatusCode.INVALID_ARGUMENT, "sm_90"),
    ("malformed arch", _with(archs=["hopper"]), grpc.StatusCode.INVALID_ARGUMENT, "sm_XY"),
    ("limit too high", _with(wall=10**9), grpc.StatusCode.INVALID_ARGUMENT, "maximum"),
    ("no .cu file", _with(name="k.txt"), grpc.StatusCode.INVALID_ARGUMENT, ".cu"),
]


@pytest.mark.parametrize("case, request_, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_rejected_clearly(client: ToolClient, case: str, request_: pb.ToolRequest,
                                         code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.run(request_, timeout_s=30)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()


def test_options_of_another_tool_are_rejected(client: ToolClient) -> None:
    request = cuda_request(tool="compile")
    request.disasm.include_sass = True
    with pytest.raises(grpc.RpcError) as info:
        client.run(request)
    assert "disasm options" in info.value.details()


def test_duplicate_file_names(client: ToolClient) -> None:
    request = cuda_request()
    request.files.add(name="k.cu", content=SAMPLE_CU)
    with pytest.raises(grpc.RpcError, match="twice"):
        client.run(request)


def test_server_still_serves_after_bad_requests(client: ToolClient) -> None:
    for _, request, _, _ in CASES:
        with pytest.raises(grpc.RpcError):
            client.run(request, timeout_s=30)
    assert client.health() == "SERVING"
    assert client.run(cuda_request()).status == pb.OK
