"""`perfbox mcp`: the tools as a Model Context Protocol server (the official `mcp` SDK), over
stdio (what an MCP client starts) or streamable HTTP.

`tools/list` gives each tool with the service's own input schema (ListTools). The tools that
judge a submission against a problem (check, bench, profile, sanitize) are bound to one problem
when the server is started with `--problem FILE`; otherwise they take the problem too, as a
`reference` argument (the KernelBench reference source). `tools/call` returns the model-facing
text (status and summary first) and the full report as `structuredContent`; a call that could
not run (unknown tool, arguments the schema refuses, the service failing) is an `isError`
result the model can read, never a protocol error. A kernel that fails a check is not an
error: the check ran, and its report says how the kernel failed.

The server is built on the SDK's low-level `Server` rather than `MCPServer`'s decorators
because the tools and their schemas come from the service at run time.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server

from perfbox.inference.tasks import acts_on_problem
from perfbox.integrations.toolbox import CallOutcome, Problem, Toolbox

REFERENCE_ARG = "reference"
# the call did not run (or perfbox failed): an isError result
ERROR_STATUSES = frozenset({"BAD_CALL", "NOT_ALLOWED", "TOOL_ERROR", "REJECTED",
                            "INTERNAL_ERROR", "UNAVAILABLE_HERE", "CANCELLED"})


def mcp_tools(toolbox: Toolbox, bound: bool) -> list[types.Tool]:
    """The service's tools as MCP tools; unbound, the problem tools take a `reference`."""
    out = []
    for name, schema in toolbox.schemas().items():
        function = schema["function"]
        parameters = copy.deepcopy(function["parameters"])
        if acts_on_problem(schema) and not bound:
            parameters["properties"][REFERENCE_ARG] = {
                "type": "string", "description": "The KernelBench reference module (class "
                "Model, get_inputs, get_init_inputs) the submission must match."}
            parameters["required"] = [*parameters.get("required", []), REFERENCE_ARG]
        out.append(types.Tool(name=name, description=function.get("description", ""),
                              input_schema=parameters))
    return out


def call_result(outcome: CallOutcome) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=outcome.text)],
                                structured_content=outcome.structured(),
                                is_error=outcome.status in ERROR_STATUSES)


async def call(toolbox: Toolbox, problem: Problem | None, name: str,
               arguments: dict[str, Any] | None) -> CallOutcome:
    """One tools/call: the server's problem, or the call's `reference` when none is bound."""
    arguments = dict(arguments or {})
    schema = toolbox.schemas().get(name)
    if problem is None and schema is not None and acts_on_problem(schema):
        reference = arguments.pop(REFERENCE_ARG, None)
        if not isinstance(reference, str) or not reference.strip():
            return CallOutcome(f"BAD_CALL: {name} needs '{REFERENCE_ARG}': the KernelBench "
                               "reference source the submission is judged against", "BAD_CALL")
        problem = Problem(reference=reference)
    return await toolbox.acall(name, arguments, problem)


def build_server(toolbox: Toolbox, problem: Problem | None = None) -> Server:
    """The MCP server over a tool service."""

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=mcp_tools(toolbox, problem is not None))

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams
                           ) -> types.CallToolResult:
        return call_result(await call(toolbox, problem, params.name, params.arguments))

    return Server("perfbox", version=_version(),
                  instructions="GPU kernel tools: compile and disassemble CUDA/Triton "
                               "kernels; check a ModelNew against its reference; bench it.",
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("perfbox")
    except metadata.PackageNotFoundError:
        return "0"


async def serve_stdio(server: Server) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(server: Server, host: str, port: int, path: str = "/mcp") -> None:
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=path, host=host)
    print(f"perfbox MCP server on http://{host}:{port}{path} (streamable HTTP)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
