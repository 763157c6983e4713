"""Clients of the tool service for training jobs and scripts: sync and asyncio.

Retries on UNAVAILABLE use gRPC's own retry policy (exponential backoff with jitter, set through
the channel's service config), so they also cover a server that is still starting. Tool calls are
stateless, which makes retrying `Run` safe. `run_batch` streams many calls over one `RunBatch`
and, if the stream breaks with UNAVAILABLE, resends only the calls that have no result yet.
RESOURCE_EXHAUSTED with the server's `retry-delay-ms` (a quota or a full queue) is retried after
exactly that delay. Calls are balanced round-robin over every address the target resolves to:
`dns:///perfbox.perfbox.svc.cluster.local:50051` (the headless Service: one address per node)
or a list, `ipv4:10.0.0.1:50051,10.0.0.2:50051`; a node that goes away drops out of the
rotation and its calls are retried on the others. `token` sends `authorization: Bearer TOKEN`;
`tls_credentials` makes the channel credentials for TLS and mutual TLS.

    from perfbox.client import ToolClient, make_request
    with ToolClient("127.0.0.1:50051") as client:
        result = client.run(make_request("compile", {"k.cu": source}, archs=["sm_90"]))
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from perfbox.api import MAX_MESSAGE_BYTES, RETRY_DELAY_KEY
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.api.v1 import tools_pb2_grpc
from perfbox.tool_messages import options_message, proto_tool_names

DEFAULT_TIMEOUT_S = 600.0
_LANGUAGES = {"cuda": pb.LANGUAGE_CUDA, "triton": pb.LANGUAGE_TRITON,
              "kernelbench": pb.LANGUAGE_KERNELBENCH}
_SUFFIX_LANGUAGE = {".cu": "cuda", ".cuh": "cuda", ".py": "triton"}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on UNAVAILABLE: gRPC's own policy for unary calls, the same numbers for resending
    the unanswered part of a batch."""

    max_attempts: int = 5  # gRPC caps a call's attempts at 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def backoffs_s(self) -> Iterator[float]:
        """Delays before attempts 2, 3, ...: exponential, capped."""
        delay = self.initial_backoff_s
        for _ in range(self.max_attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_s)


def _service_config(policy: RetryPolicy) -> str:
    retry = {
        "maxAttempts": max(2, min(policy.max_attempts, 5)),
        "initialBackoff": f"{policy.initial_backoff_s}s",
        "maxBackoff": f"{policy.max_backoff_s}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    idempotent = ["Run", "Cancel", "DeviceInfo", "ListTools"]
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{
        "name": [{"service": "perfbox.v1.ToolService", "method": m} for m in idempotent],
        "retryPolicy": retry,
        "waitForReady": True,
    }]})


def _channel_options(policy: RetryPolicy) -> list[tuple[str, Any]]:
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(policy)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def tls_credentials(ca: str | Path | None = None, cert: str | Path | None = None,
                    key: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials: `ca` verifies the server (default: the system's roots), `cert`
    and `key` are this client's certificate for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("mutual TLS needs both the client certificate and its key")

    def read(path: str | Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))


def server_retry_delay_s(error: grpc.RpcError) -> float | None:
    """The wait a RESOURCE_EXHAUSTED answer asks for, if it names one."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RETRY_DELAY_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


def _auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is not None and not token.strip():
        raise ValueError("the token is empty")
    return (("authorization", f"Bearer {token.strip()}"),) if token else ()


def language_of(names: Iterable[str]) -> str:
    """"cuda" or "triton" from the file suffixes; raises when it cannot tell."""
    found = {_SUFFIX_LANGUAGE[Path(n).suffix] for n in names if Path(n).suffix in _SUFFIX_LANGUAGE}
    if len(found) == 1:
        return found.pop()
    if "cuda" in found:
        return "cuda"
    raise ValueError("cannot tell the language from the file names; pass language='cuda', "
                     "'triton' or 'kernelbench'")


def make_request(tool: str, files: Mapping[str, str], *, language: str | None = None,
                 request_id: str = "", archs: Iterable[str] = (), limits: pb.Limits | None = None,
                 no_cache: bool = False, **options: Any) -> pb.ToolRequest:
    """Builds a ToolRequest. `options` are the fields of the tool's options message, flat
    (CompileOptions for compile; for disasm the compile fields plus include_sass / include_ptx);
    empty values keep the defaults."""
    lang = language or language_of(files)
    if lang not in _LANGUAGES:
        raise ValueError(f"language {lang!r} is not one of {', '.join(_LANGUAGES)}")
    request = pb.ToolRequest(request_id=request_id, tool=tool, language=_LANGUAGES[lang],
                             no_cache=no_cache)
    for name, content in files.items():
        request.files.add(name=name, content=content)
    if limits is not None:
        request.limits.CopyFrom(limits)
    if tool in proto_tool_names():  # an unknown tool is the service's to refuse, by name
        archs = [archs] if isinstance(archs, str) else list(archs)  # "sm_80" is one arch
        getattr(request, tool).CopyFrom(options_message(tool, {**options, "archs": archs}))
    return request


def read_files(paths: Iterable[str | Path]) -> dict[str, str]:
    """{base name: content} of local files, for make_request."""
    return {Path(p).name: Path(p).read_text() for p in paths}


def _check_batch_ids(requests: list[pb.ToolRequest]) -> None:
    ids = [r.request_id for r in requests]
    if any(not i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("every request of a batch needs a unique, non-empty request_id: "
                         "results come back in completion order and are matched by it")


def _run_retry_s(error: grpc.RpcError, attempt: int, policy: RetryPolicy) -> float | None:
    """How long to wait before sending Run again after `error`; None: raise it. (gRPC's own
    policy retries UNAVAILABLE; this honours a RESOURCE_EXHAUSTED's retry-delay-ms.)"""
    delay = server_retry_delay_s(error)
    return None if delay is None or attempt + 1 == policy.max_attempts else delay


def _batch_retry_s(error: grpc.RpcError, backoff_s: float | None) -> float | None:
    """How long to wait before resending a batch's unanswered calls; None: raise the error
    (no attempt left, or a failure that resending will not mend)."""
    asked = server_retry_delay_s(error)
    if backoff_s is None or (error.code() != grpc.StatusCode.UNAVAILABLE and asked is None):
        return None
    return asked if asked is not None else backoff_s


class _Client:
    """What both clients hold: the channel (sync or grpc.aio, as the subclass's `_grpc`), the
    stub, the default timeout, the retry policy and the auth metadata."""

    _grpc: Any = grpc

    def __init__(self, target: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retry: RetryPolicy = RetryPolicy(),
                 credentials: grpc.ChannelCredentials | None = None,
                 token: str | None = None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        self.metadata = _auth_metadata(token)
        options = _channel_options(retry)
        self.channel = (self._grpc.secure_channel(target, credentials, options) if credentials
                        else self._grpc.insecure_channel(target, options))
        self.stub = tools_pb2_grpc.ToolServiceStub(self.channel)


class ToolClient(_Client):
    """Blocking client; thread-safe (one channel, many concurrent calls)."""

    def __enter__(self) -> "ToolClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until the channel connects; raises grpc.FutureTimeoutError otherwise."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def health(self, service: str = "", timeout_s: float = 5.0) -> str:
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def run(self, request: pb.ToolRequest, timeout_s: float | None = None) -> pb.ToolResult:
        for attempt in range(self.retry.max_attempts):
            try:
                return self.stub.Run(request, timeout=timeout_s or self.timeout_s,
                                     metadata=self.metadata)
            except grpc.RpcError as e:
                delay = _run_retry_s(e, attempt, self.retry)
                if delay is None:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def run_stream(self, request: pb.ToolRequest, timeout_s: float | None = None
                   ) -> Iterator[pb.RunEvent]:
        return self.stub.RunStream(request, timeout=timeout_s or self.timeout_s,
                                   metadata=self.metadata)

    def run_batch(self, requests: Iterable[pb.ToolRequest], timeout_s: float | None = None
                  ) -> Iterator[pb.ToolResult]:
        """Yields one result per request, in completion order, each with its request_id.

        Every request needs a unique request_id. If the stream fails with UNAVAILABLE (server
        restart, network blip) the requests still without a result are resent, up to
        `max_attempts` times with backoff.
        """
        remaining = list(requests)
        _check_batch_ids(remaining)
        for delay in [*self.retry.backoffs_s(), None]:
            done: set[str] = set()
            try:
                # wait_for_ready: a restarting server is waited for, not counted as an attempt
                for result in self.stub.RunBatch(iter(remaining),
                                                 timeout=timeout_s or self.timeout_s,
                                                 metadata=self.metadata, wait_for_ready=True):
                    done.add(result.request_id)
                    yield result
                return
            except grpc.RpcError as e:
                wait_s = _batch_retry_s(e, delay)
                if wait_s is None:
                    raise
                remaining = [r for r in remaining if r.request_id not in done]
                time.sleep(wait_s)

    def run_batch_dict(self, requests: Iterable[pb.ToolRequest], timeout_s: float | None = None
                       ) -> dict[str, pb.ToolResult]:
        return {r.request_id: r for r in self.run_batch(requests, timeout_s)}

    def cancel(self, request_id: str = "", job_id: str = "") -> pb.CancelResponse:
        return self.stub.Cancel(pb.CancelRequest(request_id=request_id, job_id=job_id),
                                timeout=30, metadata=self.metadata)

    def device_info(self) -> pb.DeviceInfoResponse:
        return self.stub.DeviceInfo(pb.DeviceInfoRequest(), timeout=60, metadata=self.metadata)

    def list_tools(self) -> pb.ListToolsResponse:
        return self.stub.ListTools(pb.ListToolsRequest(), timeout=30, metadata=self.metadata)


class AsyncToolClient(_Client):
    """asyncio client (grpc.aio) with the same retry policy and batch semantics."""

    _grpc = grpc.aio

    async def __aenter__(self) -> "AsyncToolClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def run(self, request: pb.ToolRequest, timeout_s: float | None = None) -> pb.ToolResult:
        import asyncio

        for attempt in range(self.retry.max_attempts):
            try:
                return await self.stub.Run(request, timeout=timeout_s or self.timeout_s,
                                           metadata=self.metadata)
            except grpc.aio.AioRpcError as e:
                delay = _run_retry_s(e, attempt, self.retry)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def run_stream(self, request: pb.ToolRequest, timeout_s: float | None = None
                         ) -> AsyncIterator[pb.RunEvent]:
        async for event in self.stub.RunStream(request, timeout=timeout_s or self.timeout_s,
                                               metadata=self.metadata):
            yield event

    async def run_batch(self, requests: Iterable[pb.ToolRequest], timeout_s: float | None = None
                        ) -> AsyncIterator[pb.ToolResult]:
        import asyncio

        remaining = list(requests)
        _check_batch_ids(remaining)
        for delay in [*self.retry.backoffs_s(), None]:
            done: set[str] = set()
            try:
                call = self.stub.RunBatch(iter(remaining), timeout=timeout_s or self.timeout_s,
                                          metadata=self.metadata, wait_for_ready=True)
                async for result in call:
                    done.add(result.request_id)
                    yield result
                return
            except grpc.aio.AioRpcError as e:
                wait_s = _batch_retry_s(e, delay)
                if wait_s is None:
                    raise
                remaining = [r for r in remaining if r.request_id not in done]
                await asyncio.sleep(wait_s)

    async def cancel(self, request_id: str = "", job_id: str = "") -> pb.CancelResponse:
        return await self.stub.Cancel(pb.CancelRequest(request_id=request_id, job_id=job_id),
                                      timeout=30, metadata=self.metadata)

    async def device_info(self) -> pb.DeviceInfoResponse:
        return await self.stub.DeviceInfo(pb.DeviceInfoRequest(), timeout=60,
                                          metadata=self.metadata)

    async def list_tools(self) -> pb.ListToolsResponse:
        return await self.stub.ListTools(pb.ListToolsRequest(), timeout=30,
                                         metadata=self.metadata)
