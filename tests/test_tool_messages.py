"""The proto side of the tool registry: found by tool name from the descriptors, and in step
with `perfbox.tools.TOOLS` (a tool added to one and not the other fails here)."""

from __future__ import annotations

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import make_request
from perfbox.tool_messages import (REPORT_ONEOF, compile_report, option_names, options_class,
                                   options_message, proto_tool_names, report_of)
from perfbox.tools import TOOLS


def test_the_registry_and_the_proto_name_the_same_tools() -> None:
    reports = [f.name for f in pb.ToolResult.DESCRIPTOR.oneofs_by_name[REPORT_ONEOF].fields]
    assert set(proto_tool_names()) == set(TOOLS) == set(reports)


def test_disasm_options_fill_their_nested_compile_options() -> None:
    message = options_message("disasm", {"archs": ["sm_80"], "kernel": "k", "include_sass": True,
                                         "no_such_field": 1, "num_warps": 0})
    assert isinstance(message, pb.DisasmOptions)
    assert list(message.compile.archs) == ["sm_80"] and message.compile.kernel == "k"
    assert message.include_sass and message.compile.num_warps == 0
    assert "archs" in option_names("disasm") and "include_ptx" in option_names("disasm")


def test_a_lone_value_fills_a_repeated_field_and_a_wrong_type_names_its_field() -> None:
    message = options_message("disasm", {"archs": "sm_80", "defines": "X=1", "include_ptx": 1})
    assert list(message.compile.archs) == ["sm_80"] and list(message.compile.defines) == ["X=1"]
    assert message.include_ptx is True
    with pytest.raises(ValueError, match="CompileOptions.kernel cannot take 123"):
        options_message("compile", {"kernel": 123})
    with pytest.raises(ValueError, match="CheckOptions.launch cannot take 'spec.json'"):
        options_message("check", {"launch": "spec.json"})


def test_an_unknown_tool_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown tool 'nope'.*compile"):
        options_class("nope")
    assert make_request("nope", {"k.cu": ""}).WhichOneof("options") is None  # the service refuses


@pytest.mark.parametrize("result, has_compile", [
    (pb.ToolResult(compile=pb.CompileReport(diagnostics=[pb.Diagnostic(file="a.cu")])), True),
    (pb.ToolResult(disasm=pb.DisasmReport(compile=pb.CompileReport(
        diagnostics=[pb.Diagnostic(file="a.cu")]))), True),
    (pb.ToolResult(disasm=pb.DisasmReport()), False),
    (pb.ToolResult(check=pb.CheckReport(passed=True)), False),
    (pb.ToolResult(), False),
])
def test_the_compile_report_of_a_result(result: pb.ToolResult, has_compile: bool) -> None:
    report = compile_report(result)
    assert (report is not None) == has_compile
    if has_compile:
        assert report.diagnostics[0].file == "a.cu"
    assert (report_of(result) is None) == (result.WhichOneof(REPORT_ONEOF) is None)
