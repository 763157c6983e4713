"""Turns a ToolRequest into a runnable job or an error that says what to fix.

Everything checkable before running is checked here, so a bad request costs no sandbox:
unknown tool or language, bad file names (absolute, "..", duplicates), empty or oversized
sources, options of another tool, bad archs or defines, limits above the server's maximum.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from perfbox import tools
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox import limits as L
from perfbox.tools.types import ToolInputError

LANGUAGE_NAMES = {
    pb.LANGUAGE_CUDA: "cuda",
    pb.LANGUAGE_TRITON: "triton",
    pb.LANGUAGE_KERNELBENCH: "kernelbench",
}
_OPTIONS_FIELDS = ("compile", "disasm")


class RequestError(Exception):
    """A request the service refuses; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_delay_s = retry_delay_s  # > 0: when to retry (RESOURCE_EXHAUSTED)


@dataclass
class ValidRequest:
    """A request that passed every check, in the form the scheduler and cache need."""

    spec: tools.ToolSpec
    language: str
    files: list[tuple[str, str]]  # (name, content)
    options: dict[str, Any]  # proto-JSON of the tool's options, snake_case names
    limits: L.JobLimits
    request_id: str


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_file_name(name: str) -> None:
    if not name:
        raise _invalid("a source file has an empty name; give every file a relative name")
    if len(name) > L.MAX_FILE_NAME_CHARS:
        raise _invalid(f"file name {name[:40]!r}... is longer than {L.MAX_FILE_NAME_CHARS} chars")
    if "\x00" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise _invalid(f"file name {name!r} contains control characters or backslashes")
    if name.startswith("/"):
        raise _invalid(f"file name {name!r} is absolute; use a path relative to the workspace")
    parts = name.split("/")
    if ".." in parts:
        raise _invalid(f"file name {name!r} contains '..'; files must stay inside the workspace")
    if posixpath.normpath(name) != name or "." in parts:
        raise _invalid(f"file name {name!r} is not normalised; write it as "
                       f"{posixpath.normpath(name)!r}")
    if parts[0] == "build":
        raise _invalid(f"file name {name!r}: the build/ directory is reserved for outputs")


def _files(request: pb.ToolRequest) -> list[tuple[str, str]]:
    if not request.files:
        raise _invalid("the request has no source files; add at least one")
    if len(request.files) > L.MAX_FILES:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{len(request.files)} files sent; at most {L.MAX_FILES} are accepted")
    total, seen, files = 0, set(), []
    for f in request.files:
        check_file_name(f.name)
        if f.name in seen:
            raise _invalid(f"file name {f.name!r} appears twice")
        seen.add(f.name)
        total += len(f.content.encode())
        files.append((f.name, f.content))
    if total > L.MAX_SOURCE_BYTES:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"sources total {total} bytes; the limit is {L.MAX_SOURCE_BYTES} bytes")
    if all(not content.strip() for _, content in files):
        raise _invalid("every source file is empty; send the kernel's code")
    return files


def _limits(request: pb.ToolRequest, defaults: L.JobLimits) -> L.JobLimits:
    values = {}
    for name in L.JobLimits.__dataclass_fields__:
        asked = getattr(request.limits, name)
        maximum = max(getattr(L.MAX_LIMITS, name), getattr(defaults, name))
        if asked > maximum:
            raise _invalid(f"limits.{name} = {asked} is above this server's maximum {maximum}")
        values[name] = asked or getattr(defaults, name)
    return L.JobLimits(**values)


def _options(request: pb.ToolRequest, spec: tools.ToolSpec) -> dict[str, Any]:
    chosen = request.WhichOneof("options")
    if chosen is not None and chosen != spec.options_field:
        raise _invalid(f"the request carries {chosen} options but asks for tool {spec.name!r}; "
                       f"send {spec.options_field} options or none")
    message = getattr(request, spec.options_field)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def validate_request(request: pb.ToolRequest,
                     defaults: L.JobLimits = L.DEFAULT_LIMITS) -> ValidRequest:
    if len(request.request_id) > L.MAX_REQUEST_ID_CHARS:
        raise _invalid(f"request_id is longer than {L.MAX_REQUEST_ID_CHARS} characters")
    try:
        spec = tools.get(request.tool)
    except ToolInputError as e:
        raise _invalid(str(e)) from e
    language = LANGUAGE_NAMES.get(request.language, "")
    if not language:
        raise _invalid("language is not set; use LANGUAGE_CUDA, LANGUAGE_TRITON or "
                       "LANGUAGE_KERNELBENCH")
    files = _files(request)
    options = _options(request, spec)
    try:
        options = tools.validate(spec.name, language, [name for name, _ in files], options)
    except ToolInputError as e:
        raise _invalid(str(e)) from e
    except ValueError as e:  # e.g. int() of a malformed option value
        raise _invalid(f"malformed options: {e}") from e
    return ValidRequest(spec, language, files, options, _limits(request, defaults),
                        request.request_id)
