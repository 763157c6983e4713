"""Checking a model's tool call against the tool's OpenAI function schema.

The tool service publishes each tool's schema (ListTools); the rollout worker and the service
check calls against the same schema, so this reads the schema, not the service's own specs.
Hand-written rather than a JSON Schema library: the schemas are flat by design (RL frameworks'
schema classes cannot express nested objects), and the messages go back to the model, so they
say what to change in words it can act on.
"""

from __future__ import annotations

from typing import Any

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "boolean": bool, "number": (int, float)}


def check_arguments(schema: dict[str, Any], arguments: Any) -> list[str]:
    """What is wrong with `arguments` for the function `schema` describes (empty: nothing)."""
    function = schema.get("function", schema)
    name = function.get("name", "the tool")
    parameters = function.get("parameters") or {}
    properties: dict[str, Any] = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    if not isinstance(arguments, dict):
        return [f"{name} takes a JSON object of arguments"]
    problems = [f"{name} has no argument {key!r}; its arguments: {', '.join(properties)}"
                for key in arguments if key not in properties]
    for arg, prop in properties.items():
        value = arguments.get(arg)
        if value is None:
            if arg in required:
                problems.append(f"{name} needs {arg!r} ({prop.get('type', 'any')})")
            continue
        kind = _JSON_TYPES.get(str(prop.get("type")))
        if kind is not None and (not isinstance(value, kind) or
                                 (kind is not bool and isinstance(value, bool))):
            problems.append(f"{name}: {arg!r} must be a {prop['type']}")
        elif prop.get("enum") and value not in prop["enum"]:
            problems.append(f"{name}: {arg!r} must be one of {', '.join(map(str, prop['enum']))}")
    return problems
