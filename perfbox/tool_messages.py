"""The proto side of the tool registry, found by a tool's name rather than written per tool.

A tool's options travel in `ToolRequest.options` and its report in `ToolResult.report`, each a
oneof whose field is named after the tool (`compile`, `disasm`, `check`, ...). Reading those
oneofs from the generated descriptors means a new tool needs no line here, in the client or in
the service: its proto messages and its registry entry (`perfbox.tools.TOOLS`) are enough.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from perfbox.api.v1 import tools_pb2 as pb

OPTIONS_ONEOF = "options"  # ToolRequest's oneof: one options message per tool
REPORT_ONEOF = "report"  # ToolResult's oneof: one report message per tool


@functools.cache  # the descriptors never change: read them once, not on every request
def proto_tool_names() -> tuple[str, ...]:
    """The tools the proto carries options for, in field order (the registry must match)."""
    return tuple(f.name for f in pb.ToolRequest.DESCRIPTOR.oneofs_by_name[OPTIONS_ONEOF].fields)


@functools.cache
def options_class(tool: str) -> type[Message]:
    """The options message of `tool`; a ValueError names the tools the proto knows."""
    if tool not in proto_tool_names():
        raise ValueError(f"unknown tool {tool!r}; choose one of: {', '.join(proto_tool_names())}")
    return type(getattr(pb.ToolRequest(), tool))


def _empty(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and value in ("", 0, {}, [], ()))


def _as_field(field: FieldDescriptor, value: Any) -> Any:
    """A value as the field takes it: a lone value for a repeated field becomes a list of one
    (not a string split into characters), a boolean field's value a bool."""
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    if field.is_repeated and not is_map \
            and not isinstance(value, (list, tuple)):
        return [value]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    return value


def fill(message_class: type[Message], options: Mapping[str, Any]) -> Message:
    """A message of `message_class` from the entries of `options` that name its fields; an
    empty value leaves the field at its default. A nested CompileOptions field (disasm's) is
    filled from the same options, so `archs`, `defines`... reach it without nesting. A value
    of the wrong type is a ValueError naming the message."""
    fields = message_class.DESCRIPTOR.fields_by_name
    values = {k: _as_field(fields[k], v) for k, v in options.items()
              if k in fields and not _empty(v)}
    for name, field in fields.items():
        if name not in values and field.message_type is pb.CompileOptions.DESCRIPTOR:
            values[name] = fill(pb.CompileOptions, options)
    try:
        return message_class(**values)
    except (TypeError, ValueError):
        for name, value in values.items():  # name the field that does not take its value
            try:
                message_class(**{name: value})
            except (TypeError, ValueError) as e:
                raise ValueError(f"{message_class.DESCRIPTOR.name}.{name} cannot take "
                                 f"{value!r}: {e}") from e
        raise


def options_message(tool: str, options: Mapping[str, Any]) -> Message:
    """`tool`'s options message from flat keyword options (see `fill`)."""
    return fill(options_class(tool), options)


def option_names(tool: str) -> tuple[str, ...]:
    """The flat option names `options_message(tool, ...)` reads (nested CompileOptions' too)."""
    names = []
    for name, field in options_class(tool).DESCRIPTOR.fields_by_name.items():
        nested = field.message_type is pb.CompileOptions.DESCRIPTOR
        names += list(pb.CompileOptions.DESCRIPTOR.fields_by_name) if nested else [name]
    return tuple(names)


def report_of(result: pb.ToolResult) -> Message | None:
    """The tool's report in a result, or None when it carries none."""
    kind = result.WhichOneof(REPORT_ONEOF)
    return getattr(result, kind) if kind else None


def compile_report(result: pb.ToolResult) -> pb.CompileReport | None:
    """The compiler's report in a result: the report itself (compile) or the CompileReport it
    holds (disasm); None for tools that do not compile the submitted source."""
    report = report_of(result)
    if report is None or isinstance(report, pb.CompileReport):
        return report
    for field in report.DESCRIPTOR.fields:
        if field.message_type is pb.CompileReport.DESCRIPTOR and report.HasField(field.name):
            return getattr(report, field.name)
    return None
