"""The bundled workload's tool calls as requests: its own four tools only (a freely generating
model must not reach GPU profilers through it), source tools and problem tools told apart by
the registry, and a bad call answered with what to fix instead of a request."""

from __future__ import annotations

import pytest

from perfbox.inference import workload as W
from perfbox.inference.tool_call_parser import ToolCall
from perfbox.inference.workload_tools import WORKLOAD_TOOLS, ToolBridge

BRIDGE = ToolBridge(None, W.load().problems)  # type: ignore[arg-type]  (requests only)
PROBLEM = next(iter(W.load().problems))


@pytest.mark.parametrize("name", ["profile", "sanitize", "nope"])
def test_only_the_workloads_tools_are_offered(name: str) -> None:
    answer = BRIDGE.request(ToolCall(name, {"problem": PROBLEM, "submission": "x"}, ""))
    assert answer == f"unknown tool {name!r}; tools: {', '.join(WORKLOAD_TOOLS)}"


def test_source_tools_and_problem_tools_become_their_requests() -> None:
    disasm = BRIDGE.request(ToolCall("disasm", {"source": "__global__ void k() {}",
                                                "file": "k.cu", "arch": "sm_80"}, ""))
    assert not isinstance(disasm, str) and list(disasm.disasm.compile.archs) == ["sm_80"]
    bench = BRIDGE.request(ToolCall("bench", {"problem": PROBLEM, "submission": "x"}, ""))
    assert not isinstance(bench, str) and bench.bench.time_budget_s == 2.0
    assert "non-empty 'source'" in BRIDGE.request(ToolCall("compile", {"source": ""}, ""))
    assert "unknown problem" in BRIDGE.request(ToolCall("check", {"problem": "zz"}, ""))


def test_a_tool_the_registry_does_not_know_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown tools nope"):
        ToolBridge(None, {}, tools=("compile", "nope"))  # type: ignore[arg-type]
