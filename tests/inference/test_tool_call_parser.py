"""Tool-call parsing from a stream, and canonical keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perfbox.inference.tool_call_parser import ToolCallFormat, ToolCallParser, canonical_key

CALL = '<tool_call>{"name": "compile", "arguments": {"file": "k.cu", "arch": "sm_90"}}</tool_call>'


def test_arguments_complete_before_the_end_tag_then_closed() -> None:
    parser = ToolCallParser()
    head, tail = CALL.split("</tool_call>")
    event = parser.feed("thinking... " + head)
    assert [c.name for c in event.arguments_complete] == ["compile"] and not event.closed
    event = parser.feed("</tool_call> after")
    assert [c.arguments for c in event.closed] == [{"file": "k.cu", "arch": "sm_90"}]
    assert not event.arguments_complete


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=60))
def test_any_split_of_the_stream_gives_the_same_calls(cuts: list[int]) -> None:
    text = "a " + CALL + " b " + CALL.replace("compile", "check") + " end"
    parser, closed, early, i = ToolCallParser(), [], [], 0
    for size in cuts * 50:
        if i >= len(text):
            break
        event = parser.feed(text[i:i + size])
        closed += [c.name for c in event.closed]
        early += [c.name for c in event.arguments_complete]
        i += size
    if i < len(text):
        event = parser.feed(text[i:])
        closed += [c.name for c in event.closed]
        early += [c.name for c in event.arguments_complete]
    assert closed == ["compile", "check"] and early == ["compile", "check"]


def test_malformed_call_is_reported_and_custom_tags() -> None:
    event = ToolCallParser().feed("<tool_call>{not json}</tool_call>")
    assert event.malformed == ["{not json}"] and not event.closed
    fmt = ToolCallFormat("[CALL]", "[/CALL]")
    event = ToolCallParser(fmt).feed('[CALL]{"name": "bench", "arguments": "{\\"n\\": 1}"}[/CALL]')
    assert event.closed[0].arguments == {"n": 1}


def test_canonical_keys_ignore_key_order_and_number_spelling() -> None:
    assert canonical_key("c", {"b": 1.0, "a": [2, {"y": 1, "x": 0.5}]}) == \
        canonical_key("c", {"a": [2.0, {"x": 0.5, "y": 1}], "b": 1})
    assert canonical_key("c", {"a": 1}) != canonical_key("c", {"a": 1.5})
    assert canonical_key("c", {"a": 1}) != canonical_key("d", {"a": 1})
