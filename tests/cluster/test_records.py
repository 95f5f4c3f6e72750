"""What needs no Redis: the backplane's records, parsed without sockets (records.py),
and the checks of --backplane."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gchat.errors import ConfigError
from gchat.server import Settings
from gchat.server.records import (
    BadRecord,
    Msg,
    Presence,
    Refusal,
    RoomChange,
    Whisper,
    parse_records,
)

MSG = b'{"op":"msg","room":"r","from":"a","text":"hi","seq":7,"ts":1}'
JOIN = b'{"op":"presence","room":"r","nick":"a","event":"join"}'


def test_a_payload_holds_records_in_order():
    payload = (b"M r 7 1:5\n%s\nP r 7 1000000002 1:6\n%s\nW 2000000001 17647000001230\n{}\n"
               b"W 2000000002 9 +x=y\n{}\nE r 1:7\n{}\nX r 1:8 moderated\n{}\n" % (MSG, JOIN))
    assert parse_records(payload) == [
        Msg("r", 7, "1:5", MSG + b"\n"),
        Presence("r", 7, 1000000002, "1:6", JOIN + b"\n"),
        Whisper(2000000001, b"{}\n", 17647000001230),
        Whisper(2000000002, b"{}\n", 9, "+x=y"),
        RoomChange("r", "1:7", b"{}\n"),
        Refusal("r", "1:8", "moderated", b"{}\n"),
    ]


@pytest.mark.parametrize("payload", [
    b"", b"M r 7 1:5\n", b"M r 7 1:5\n{}", b"M r x 1:5\n{}\n", b"M r 7\n{}\n", b"Z r 7 t\n{}\n",
    b"X r t\n{}\n", b"P r 7 -1 -\n{}\n", b"W\n{}\n", b"W 2\n{}\n", b"E r\n{}\n", b"M \xff 7 t\n{}\n",
    b"M r 7 t\n{}\nM r 8 t\n",
])
def test_a_malformed_payload_is_rejected_whole(payload):
    with pytest.raises(BadRecord):
        parse_records(payload)


@given(st.binary(max_size=200))
def test_any_bytes_give_records_or_bad_record(payload):
    try:
        records = parse_records(payload)
    except BadRecord:
        return
    assert records and all(r.frame.endswith(b"\n") for r in records)


@given(st.lists(st.tuples(st.from_regex(r"#?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
                          st.integers(0, 2**53), st.text("0123456789:", min_size=1, max_size=20)),
                max_size=5))
def test_msg_records_round_trip(messages):
    payload = b"".join(b"M %s %d %s\n%s\n" % (room.encode(), seq, tag.encode(), MSG)
                       for room, seq, tag in messages)
    if not messages:
        with pytest.raises(BadRecord):
            parse_records(payload)
        return
    assert parse_records(payload) == [Msg(room, seq, tag, MSG + b"\n") for room, seq, tag in messages]


@pytest.mark.parametrize(("url", "problem"), [
    ("http://localhost:6379", "must be a redis://HOST:PORT/DB URL"),
    ("redis://127.0.0.1:abc/0", "has a port that is not a number"),
    ("redis://127.0.0.1:6379/x", "has a database that is not a number"),
    ("redis:///0", "needs a host"),
    ("unix://", "needs a socket path"),
    ("redis://:s3cret@127.0.0.1:abc/0", "redis://:***@127.0.0.1:abc/0"),
])
def test_a_bad_backplane_url_is_refused_with_what_is_wrong(url, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)) as refused:
        Settings(backplane=url)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://h", "rediss://u:p@h:1/2",
                                 "unix:///run/redis.sock"])
def test_good_backplane_urls_are_taken(url):
    assert Settings(backplane=url).backplane == url
