"""LineFramer, pure: whole streams, byte by byte, any split, and the size limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gchat.core import LineFramer


def feed_all(framer: LineFramer, chunks) -> list[bytes]:
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    return lines


def test_lines_cr_and_blank_lines():
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\n\r\n  \t\nx\r\r\ny') == [b'{"a":1}', b"", b"  \t", b"x\r"]
    assert framer.buffered == 1
    assert framer.feed(b"z\n") == [b"yz"]
    assert framer.buffered == 0


def test_byte_by_byte_equals_whole():
    stream = b'{"op":"ping"}\r\n\n{"op":"hello","nick":"x"}\npartial'
    whole = LineFramer(100).feed(stream)
    framer = LineFramer(100)
    assert feed_all(framer, [stream[i:i + 1] for i in range(len(stream))]) == whole
    assert framer.buffered == len(b"partial")


def test_max_frame_counts_cr_and_lf():
    framer = LineFramer(5)
    assert framer.feed(b"abc\r\nabcd\n") == [b"abc", b"abcd"]  # 5 bytes each: allowed
    assert not framer.overflowed
    assert framer.feed(b"abcd\r\n") == []  # 6 bytes
    assert framer.overflowed


def test_overflow_returns_lines_before_and_ignores_the_rest():
    framer = LineFramer(8)
    assert framer.feed(b"ok\n" + b"x" * 20 + b"\nafter\n") == [b"ok"]
    assert framer.overflowed
    assert framer.feed(b"more\n") == []


def test_overflow_does_not_wait_for_the_lf():
    framer = LineFramer(8)
    assert framer.feed(b"1234567") == []  # 7 bytes + a LF would fit
    assert not framer.overflowed
    assert framer.feed(b"8") == []
    assert framer.overflowed
    assert framer.buffered == 0


def test_buffer_never_grows_past_the_limit_line_sent_byte_by_byte():
    framer = LineFramer(1000)
    for _ in range(5000):
        framer.feed(b"x")
        assert framer.buffered <= 999
    assert framer.overflowed


def test_trailing_data_stays_buffered():
    framer = LineFramer(100)
    assert framer.feed(b"a\nb") == [b"a"]
    assert framer.feed(b"") == []
    assert framer.buffered == 1


lines_strategy = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20)


@given(lines=lines_strategy, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_any_split_yields_the_same_lines(lines, cuts):
    stream = b"".join(line + b"\n" for line in lines)
    expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all(LineFramer(64), chunks) == expected


@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=30),
       max_frame=st.integers(min_value=2, max_value=200))
def test_fuzz_rule_lines_within_limit_or_overflow(data, cuts, max_frame):
    # The rule: any input yields lines of at most max_frame bytes (with the LF), the
    # same for every split, or stops with `overflowed` after a prefix of those lines.
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    split = LineFramer(max_frame)
    got = feed_all(split, chunks)
    whole = LineFramer(max_frame)
    reference = whole.feed(data)
    assert got == reference
    assert split.overflowed == whole.overflowed
    assert all(len(line) + 2 <= max_frame + 1 for line in got)
    assert split.buffered < max_frame
