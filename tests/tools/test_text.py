"""Bounded output keeps head and tail and says how much it dropped."""

from hypothesis import given
from hypothesis import strategies as st

from perfbox.tools.text import ELISION_MARKER, HeadTailBuffer, bound_text


def test_short_text_is_unchanged() -> None:
    assert bound_text("hello", 10) == "hello"


def test_long_text_keeps_head_and_tail() -> None:
    text = "A" * 100 + "B" * 1000 + "C" * 100
    out = bound_text(text, 200)
    assert out.startswith("A" * 100) and out.endswith("C" * 100)
    assert ELISION_MARKER.format(n=1000) in out


@given(st.lists(st.binary(max_size=300), max_size=50), st.integers(min_value=2, max_value=512))
def test_head_tail_buffer_matches_bounding_the_whole_stream(chunks: list[bytes], keep: int) -> None:
    buffer = HeadTailBuffer(keep)
    for chunk in chunks:
        buffer.write(chunk)
    whole = b"".join(chunks)
    assert buffer.total_bytes == len(whole)
    assert len(buffer.head) + len(buffer.tail) <= keep
    expected_head = whole[: keep // 2]
    assert bytes(buffer.head) == expected_head
    if len(whole) > keep:
        assert bytes(buffer.tail) == whole[len(whole) - (keep - keep // 2):]
        assert f"{len(whole) - keep} bytes elided" in buffer.text()
    else:
        assert bytes(buffer.head) + bytes(buffer.tail) == whole
