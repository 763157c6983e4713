"""The server interceptor every call passes: authentication, per-client quotas, and the call's
client id for metrics and logs.

Refusals keep the method's own shape (unary or streaming) so the client sees a clean status:
UNAUTHENTICATED without a valid bearer token, RESOURCE_EXHAUSTED over quota with the wait in
trailing metadata `retry-delay-ms` (the client honours it). A request whose bytes do not parse
as the method's message gets INVALID_ARGUMENT naming the message, not grpc's INTERNAL
"Exception deserializing request". Health checks pass untouched.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import grpc

from perfbox.api import RETRY_DELAY_KEY
from perfbox.sandbox.auth import Tokens, is_open
from perfbox.sandbox.quota import Quotas

ANONYMOUS = "anonymous"
# the calling client's id, set for the duration of a call (logs and metrics read it)
current_client: contextvars.ContextVar[str] = contextvars.ContextVar("perfbox_client",
                                                                     default=ANONYMOUS)
OnCall = Callable[[str, str, grpc.StatusCode | None], None]  # (method, client, refusal)


def retry_delay_metadata(wait_s: float) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a RESOURCE_EXHAUSTED answer: the wait in whole milliseconds."""
    return ((RETRY_DELAY_KEY, str(max(1, round(wait_s * 1000)))),)


class Gate(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Tokens | None, quotas: Quotas | None,
                 on_call: OnCall | None = None) -> None:
        self.tokens = tokens
        self.quotas = quotas
        self.on_call = on_call or (lambda method, client, refusal: None)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or is_open(details.method):
            return handler
        handler = _decoding(handler, details.method)
        client = ANONYMOUS
        if self.tokens is not None:
            metadata = dict(details.invocation_metadata or ())
            found = self.tokens.client_of(metadata.get("authorization"))
            if found is None:
                self.on_call(details.method, ANONYMOUS, grpc.StatusCode.UNAUTHENTICATED)
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid bearer token: send the metadata "
                                "'authorization: Bearer <token>' with a token the server knows")
            client = found
        wait_s = self.quotas.admit(client) if self.quotas is not None else 0.0
        if wait_s > 0:
            self.on_call(details.method, client, grpc.StatusCode.RESOURCE_EXHAUSTED)
            trailing = retry_delay_metadata(wait_s)
            return _refusal(handler, grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"client {client!r} is over its quota; retry in "
                            f"{trailing[0][1]} ms", trailing)
        self.on_call(details.method, client, None)
        release = self.quotas.release if self.quotas is not None else (lambda c: None)
        return _admitted(handler, client, release)


def _refusal(handler: Any, code: grpc.StatusCode, message: str,
             trailing: tuple[tuple[str, str], ...] = ()) -> Any:
    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        if trailing:
            context.set_trailing_metadata(trailing)
        context.abort(code, message)

    return _same_shape(handler, refuse)


def _admitted(handler: Any, client: str, release: Callable[[str], None]) -> Any:
    """The handler with the client id set while it runs and the quota released when the call
    ends however it ends (completion, error, cancellation)."""
    behaviour = _behaviour(handler)

    def run(request: Any, context: grpc.ServicerContext) -> Any:
        once = threading.Lock()

        def done() -> None:
            if once.acquire(blocking=False):
                release(client)

        context.add_callback(done)
        current_client.set(client)  # the handler thread's own context: the next call resets it
        result = behaviour(request, context)
        return _streaming(result, client) if handler.response_streaming else result

    return _same_shape(handler, run)


def _streaming(responses: Any, client: str) -> Any:
    """A streaming handler's body runs as it is iterated, possibly later: set the id there."""
    current_client.set(client)
    yield from responses


def _behaviour(handler: Any) -> Callable[..., Any]:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary
            or handler.stream_stream)


class Undecodable:
    """What a request that does not parse becomes. grpc answers a deserializer's exception with
    INTERNAL, which reads as the server's fault; this marker lets the call answer
    INVALID_ARGUMENT, the client's."""

    def __init__(self, message_name: str, error: Exception) -> None:
        self.message = (f"the request could not be decoded as {message_name} ({error}); "
                        "check that the client and the server use the same perfbox proto "
                        "version, and that the bytes sent are a serialized "
                        f"{message_name}")


def _message_name(deserialize: Callable[[bytes], Any], method: str) -> str:
    """The protobuf message's full name (generated stubs pass `Message.FromString`), else the
    method's."""
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "")
    return name if isinstance(name, str) and name else f"the request message of {method}"


def _decoding(handler: Any, method: str) -> Any:
    """The handler with a deserializer that never raises (a failure becomes `Undecodable`)
    and a behaviour that aborts with INVALID_ARGUMENT when it meets one."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler
    name = _message_name(deserialize, method)

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # DecodeError, or anything a custom deserializer raises
            return Undecodable(name, e)

    behaviour = _behaviour(handler)
    if handler.request_streaming:
        def run(requests: Any, context: grpc.ServicerContext) -> Any:
            seen: list[Undecodable] = []
            result = behaviour(_decoded(requests, context, seen), context)
            if handler.response_streaming:
                return _then_refuse_undecodable(result, context, seen)
            _refuse_undecodable(seen, context)
            return result
    else:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return behaviour(request, context)

    return _same_shape(handler, run, decode)


def _decoded(requests: Any, context: grpc.ServicerContext, seen: list[Undecodable]) -> Any:
    """A request stream that stops at the first undecodable message. The abort sets the call's
    status even when the handler reads the stream on a thread of its own and swallows the
    exception (RunBatch's reader does)."""
    for request in requests:
        if isinstance(request, Undecodable):
            seen.append(request)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _then_refuse_undecodable(responses: Any, context: grpc.ServicerContext,
                             seen: list[Undecodable]) -> Any:
    """Answers already due are sent; the stream then ends with INVALID_ARGUMENT."""
    yield from responses
    _refuse_undecodable(seen, context)


def _refuse_undecodable(seen: list[Undecodable], context: grpc.ServicerContext) -> None:
    if seen:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, seen[0].message)


def _same_shape(handler: Any, behaviour: Callable[..., Any],
                deserialize: Callable[[bytes], Any] | None = None) -> Any:
    """A handler of the same kind as `handler` running `behaviour`; `deserialize` replaces
    the request deserializer when given."""
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}
    return make[(handler.request_streaming, handler.response_streaming)](
        behaviour, request_deserializer=deserialize or handler.request_deserializer,
        response_serializer=handler.response_serializer)
