"""Bytes that do not parse as the method's request message get INVALID_ARGUMENT naming the
message (not grpc's INTERNAL "Exception deserializing request"), on every kind of method, with
and without tokens and quotas, and health checks keep working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.quota import QuotaConfig
from perfbox.sandbox.server import ToolServer
from tests.conftest import cuda_request, has_bwrap, start_server

SERVICE = "/perfbox.v1.ToolService/"
GARBAGE = b"\xff\xff\xff"  # field 31 with a truncated varint: never a valid message
TOKEN = "token-of-the-undecodable-test-0123"


def _raw(channel: grpc.Channel, method: str, streaming: bool = False) -> Any:
    """A call that sends and returns bytes as they are (no serializer either way)."""
    make = channel.stream_stream if streaming else channel.unary_unary
    return make(SERVICE + method, request_serializer=None, response_deserializer=None)


def _assert_undecodable(error: grpc.RpcError, message: str = "perfbox.v1.ToolRequest") -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert f"could not be decoded as {message}" in error.details()
    assert "proto version" in error.details()


@pytest.fixture()
def channel(server: tuple[ToolServer, int]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as c:
        yield c


def test_unary_call_with_undecodable_bytes(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _raw(channel, "Run")(GARBAGE, timeout=30)
    _assert_undecodable(info.value)


def test_other_messages_are_named(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _raw(channel, "Cancel")(GARBAGE, timeout=30)
    _assert_undecodable(info.value, "perfbox.v1.CancelRequest")


def test_server_streaming_call_with_undecodable_bytes(channel: grpc.Channel) -> None:
    call = channel.unary_stream(SERVICE + "RunStream", request_serializer=None,
                                response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        list(call(GARBAGE, timeout=30))
    _assert_undecodable(info.value)


def test_batch_with_one_undecodable_message(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(_raw(channel, "RunBatch", streaming=True)(iter([GARBAGE]), timeout=60))
    _assert_undecodable(info.value)


def test_batch_answers_what_came_before_the_undecodable_message(channel: grpc.Channel) -> None:
    good = cuda_request(request_id="before-the-garbage").SerializeToString()
    answers: list[bytes] = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in _raw(channel, "RunBatch", streaming=True)(iter([good, GARBAGE]),
                                                                timeout=120):
            answers.append(answer)
    _assert_undecodable(info.value)
    for answer in answers:  # whatever was answered is a proper result of the good call
        assert pb.ToolResult.FromString(answer).request_id == "before-the-garbage"


def test_server_serves_after_undecodable_calls(client: ToolClient, channel: grpc.Channel
                                               ) -> None:
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            _raw(channel, "Run")(GARBAGE, timeout=30)
    assert client.health() == "SERVING"
    assert client.run(cuda_request()).status == pb.OK


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server with bearer tokens and a quota of one call in flight per client: the decode
    check runs after both, and a call it refuses must give its slot back."""
    if not has_bwrap():
        pytest.skip("bubblewrap is not installed")
    directory = tmp_path_factory.mktemp("undecodable")
    tokens = directory / "tokens"
    tokens.write_text(f"tester {TOKEN}\n")
    server, port = start_server(directory, tokens_file=tokens,
                                quota=QuotaConfig(rate_per_s=100.0, burst=100, max_inflight=1))
    yield port
    server.stop(grace_s=2)


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_undecodable_with_tokens_and_quotas(guarded: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{guarded}") as channel:
        for _ in range(3):  # an in-flight cap of 1: a slot kept by a refused call would show
            with pytest.raises(grpc.RpcError) as info:
                _raw(channel, "Run")(GARBAGE, timeout=30, metadata=_metadata(TOKEN))
            _assert_undecodable(info.value)
        with pytest.raises(grpc.RpcError) as info:
            list(_raw(channel, "RunBatch", streaming=True)(iter([GARBAGE]), timeout=60,
                                                           metadata=_metadata(TOKEN)))
        _assert_undecodable(info.value)
        with pytest.raises(grpc.RpcError) as info:  # authentication still comes first
            _raw(channel, "Run")(GARBAGE, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with ToolClient(f"127.0.0.1:{guarded}", token=TOKEN, timeout_s=60) as client:
        assert client.health() == "SERVING"
        assert client.list_tools().tools
