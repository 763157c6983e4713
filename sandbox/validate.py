"""Turns a ToolRequest into a runnable job or an error that says what to fix.

Everything checkable before running is checked here, so a bad request costs no sandbox:
unknown tool or language, bad file names (absolute, "..", duplicates, a file that is another's
directory, too many UTF-8 bytes, invisible or control characters), empty or oversized sources,
options of another tool, bad archs or defines, limits above the server's maximum or below its
minimum.
"""

from __future__ import annotations

import posixpath
import unicodedata
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


# Unicode categories no file name needs and a hostile one uses to make two names look alike or
# a listing read differently: controls (Cc), format characters (Cf: bidirectional overrides
# U+202A-U+202E and U+2066-U+2069, zero-width characters), line and paragraph separators (Zl,
# Zp), surrogates (Cs), private use (Co) and unassigned code points (Cn).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _forbidden_character(name: str) -> str:
    """The first character of `name` no file name may hold, or ''."""
    for c in name:
        category = unicodedata.category(c)
        if c == "\\" or category in _FORBIDDEN_CATEGORIES or (category == "Zs" and c != " "):
            return c
    return ""


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def _check_name_size(name: str) -> None:
    """Byte limits, as the kernel counts: a longer name fails at write time inside the job
    (ENAMETOOLONG), which would read as the server's fault."""
    size = _utf8_size(name)
    if size > L.MAX_FILE_NAME_BYTES:
        raise _invalid(f"file name {name[:40]!r}... is {size} bytes in UTF-8; the limit is "
                       f"{L.MAX_FILE_NAME_BYTES} bytes, shorten it")
    for part in name.split("/"):
        size = _utf8_size(part)
        if size > L.MAX_NAME_COMPONENT_BYTES:
            raise _invalid(f"file name {name[:40]!r}...: the path component {part[:40]!r}... "
                           f"is {size} bytes in UTF-8; each component may have at most "
                           f"{L.MAX_NAME_COMPONENT_BYTES} bytes, shorten it")


def _check_name_characters(name: str) -> None:
    bad = _forbidden_character(name)
    if bad:
        category = unicodedata.category(bad)
        raise _invalid(f"file name {name!r} contains the character U+{ord(bad):04X} "
                       f"(Unicode category {category}); use printable characters, no "
                       "control, format, invisible or unusual space characters, no backslashes")
    for part in name.split("/"):
        if part != part.strip():
            raise _invalid(f"file name {name!r}: the component {part!r} starts or ends with "
                           "whitespace; remove it")


def check_file_name(name: str) -> None:
    """Refuses a name the workspace cannot hold as written or that could mislead a reader."""
    if not name:
        raise _invalid("a source file has an empty name; give every file a relative name")
    _check_name_size(name)
    _check_name_characters(name)
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


def _check_no_file_is_a_directory(names: list[str]) -> None:
    """`a.cu` beside `a.cu/b.cu`: one path cannot be a file and a directory, and writing the
    workspace would fail inside the sandbox whichever came first."""
    directories: dict[str, str] = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            directories.setdefault("/".join(parts[:i]), name)
    for name in names:
        if name in directories:
            raise _invalid(f"file name {name!r} is also a directory of {directories[name]!r}; "
                           "rename one of them")


def _check_cuda_source_names(language: str, names: list[str]) -> None:
    """A .cu name at NAME_MAX is a valid file but nvcc cannot name its temporaries after it:
    the compile would fail with "File name too long", which reads as the kernel's fault."""
    if language != "cuda":
        return
    for name in names:
        base = posixpath.basename(name)
        if base.endswith(".cu") and _utf8_size(base) > L.MAX_CUDA_SOURCE_NAME_BYTES:
            raise _invalid(f"CUDA source {base[:40]!r}... is {_utf8_size(base)} bytes long; nvcc "
                           "names its intermediate files after it, so a .cu file's name may "
                           f"have at most {L.MAX_CUDA_SOURCE_NAME_BYTES} bytes: shorten it")


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
    _check_no_file_is_a_directory([name for name, _ in files])
    if total > L.MAX_SOURCE_BYTES:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"sources total {total} bytes; the limit is {L.MAX_SOURCE_BYTES} bytes")
    if all(not content.strip() for _, content in files):
        raise _invalid("every source file is empty; send the kernel's code")
    return files


def _readable_size(name: str, value: int) -> str:
    """A byte limit's size in MiB or KiB for the message, e.g. ' (64 MiB)'; '' otherwise."""
    if not name.endswith("_bytes"):
        return ""
    if value % L.MiB == 0:
        return f" ({value // L.MiB} MiB)"
    return f" ({value // 1024} KiB)" if value % 1024 == 0 else ""


def _limits(request: pb.ToolRequest, defaults: L.JobLimits) -> L.JobLimits:
    values = {}
    for name in L.JobLimits.__dataclass_fields__:
        asked = getattr(request.limits, name)
        maximum = max(getattr(L.MAX_LIMITS, name), getattr(defaults, name))
        if asked > maximum:
            raise _invalid(f"limits.{name} = {asked} is above this server's maximum {maximum}")
        minimum = min(getattr(L.MIN_LIMITS, name), getattr(defaults, name))
        if 0 < asked < minimum:
            raise _invalid(f"limits.{name} = {asked} is below this server's minimum {minimum}"
                           f"{_readable_size(name, minimum)}; raise it or leave it 0 for the "
                           "default")
        values[name] = asked or getattr(defaults, name)
    return L.JobLimits(**values)


def _options(request: pb.ToolRequest, spec: tools.ToolSpec) -> dict[str, Any]:
    chosen = request.WhichOneof("options")
    # the proto names each oneof field after its tool
    if chosen is not None and chosen != spec.name:
        raise _invalid(f"the request carries {chosen} options but asks for tool {spec.name!r}; "
                       f"send {spec.name} options or none")
    message = getattr(request, spec.name)
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
    _check_cuda_source_names(language, [name for name, _ in files])
    options = _options(request, spec)
    try:
        options = tools.validate(spec.name, language, [name for name, _ in files], options)
    except ToolInputError as e:
        raise _invalid(str(e)) from e
    except ValueError as e:  # e.g. int() of a malformed option value
        raise _invalid(f"malformed options: {e}") from e
    return ValidRequest(spec, language, files, options, _limits(request, defaults),
                        request.request_id)
