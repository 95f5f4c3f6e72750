"""Hostile input against a live server (PROTOCOL.md 6, guarantee 4): whatever a client
sends, the server answers it as the contract says, keeps serving everyone else, and
keeps no more sessions than are connected.

The oracle for raw lines is the pure decoder (gchat.protocol), itself tested against
the contract in tests/test_protocol.py: a line it calls a bad frame must get
`bad_frame`, any other line exactly one reply with the line's id.
"""

from __future__ import annotations

import json
import socket

import gevent
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gchat.protocol import BadFrame, decode_request, valid_nick, valid_room
from tests.rawclient import Client

EXAMPLES = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Hostile:
    """A registered client that reconnects if the server closed it; each `exchange`
    sends raw bytes, then a ping, and returns every frame before the ping's ok."""

    def __init__(self, live) -> None:
        self.live = live
        self.client: Client | None = None
        self.count = 0

    def fresh(self) -> Client:
        if self.client is None or self.client.closed:
            self.count += 1
            self.client = self.live.client(f"hostile{self.count}")
            self.client.join("#arena")
        return self.client

    def exchange(self, data: bytes) -> list[dict]:
        client = self.fresh()
        client.send_raw(data)
        return client.drain()


@pytest.fixture
def arena(live):
    """A hostile client and a bystander in the same room."""
    bystander = live.client("bystander")
    bystander.join("#arena")
    yield Hostile(live), bystander
    # Everyone else is still served, and the server kept no session it should not have.
    assert bystander.request("say", room="#arena", text="still here")["op"] == "ok"
    assert bystander.drain() is not None
    bystander.close()


def expected_reply(line: bytes) -> str | None:
    """What the server must answer to `line` (without its LF): None for a blank line,
    "bad_frame" for a bad frame, else "some" (exactly one reply)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip(b" \t\r"):
        return None
    return "bad_frame" if isinstance(decode_request(line), BadFrame) else "some"


nesting = st.integers(min_value=60, max_value=70).map(lambda n: b"[" * n + b"]" * n)
deep_object = st.integers(min_value=62, max_value=66).map(
    lambda n: b'{"op":"ping","x":' + b'{"a":' * n + b"1" + b"}" * n + b"}")
huge_numbers = st.sampled_from([b'{"op":"ping","id":' + b"9" * 5000 + b"}", b'{"op":"ping","id":1e999}',
                                b'{"op":"ping","id":9007199254740992}', b'{"op":"ping","id":-0}',
                                b'{"op":"ping","id":NaN}', b'{"op":"ping","id":Infinity}'])
surrogates = st.sampled_from([b'{"op":"say","room":"#arena","text":"\\ud800"}',
                              b'{"op":"say","room":"#arena","text":"\\udfff\\ud800"}',
                              b'{"op":"nick","nick":"\\ud83d"}'])
raw_lines = st.one_of(st.binary(max_size=300), nesting, deep_object, huge_numbers, surrogates,
                      st.text(max_size=100).map(str.encode))


@EXAMPLES
@given(line=raw_lines)
def test_any_line_gets_what_the_contract_says(arena, line):
    hostile, _ = arena
    line = line.replace(b"\n", b" ")
    request = decode_request(line.rstrip(b"\r"))
    assume(isinstance(request, BadFrame) or request.op not in ("quit", "leave", "nick"))
    frames = hostile.exchange(line + b"\n")
    expected = expected_reply(line)
    replies = [f for f in frames if f["op"] in ("ok", "error")]
    if expected is None:
        assert replies == []
    else:
        assert len(replies) == 1, (line, frames)
        if expected == "bad_frame":
            assert replies[0]["code"] == "bad_frame"
        else:
            assert replies[0].get("code") != "bad_frame"


NOT_STRING = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                       st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NOT_SEQ = st.one_of(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda x: not x.is_integer()), st.booleans(), st.lists(st.integers(), max_size=2),
    st.integers(max_value=-1))
# (op, the fields of a good request, the field to spoil, what to spoil it with)
SPOILS = [
    ("join", {"room": "#arena"}, "room", NOT_STRING), ("join", {"room": "#x"}, "after", NOT_SEQ),
    ("leave", {"room": "#arena"}, "room", NOT_STRING),
    ("say", {"room": "#arena", "text": "t"}, "room", NOT_STRING),
    ("say", {"room": "#arena", "text": "t"}, "text", NOT_STRING),
    ("whisper", {"to": "bystander", "text": "t"}, "to", NOT_STRING),
    ("whisper", {"to": "bystander", "text": "t"}, "text", NOT_STRING),
    ("nick", {"nick": "somebody"}, "nick", NOT_STRING), ("who", {"room": "#arena"}, "room", NOT_STRING),
    ("history", {"room": "#arena"}, "room", NOT_STRING), ("history", {"room": "#arena"}, "before", NOT_SEQ),
    ("history", {"room": "#arena"}, "after", NOT_SEQ),
    ("history", {"room": "#arena"}, "limit", st.one_of(NOT_SEQ, st.sampled_from([0, 101, 10**6]))),
    ("quit", {}, "reason", NOT_STRING), ("ping", {}, "id", st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.lists(st.integers(), max_size=2),
        st.integers(min_value=2**53), st.text(min_size=65, max_size=70))),
]


@EXAMPLES
@given(case=st.sampled_from(SPOILS).flatmap(
    lambda spoil: st.tuples(st.just(spoil), spoil[3])))
def test_every_field_with_a_wrong_type_is_bad_args(arena, case):
    (op, fields, field, _), value = case
    hostile, _ = arena
    request = {"op": op, **fields, field: value}
    if field != "id":
        request["id"] = "spoiled"
    frames = hostile.exchange(json.dumps(request).encode() + b"\n")
    replies = [f for f in frames if f["op"] in ("ok", "error")]
    assert len(replies) == 1, (request, frames)
    assert replies[0]["code"] == "bad_args", (request, replies)
    assert replies[0]["id"] == (None if field == "id" else "spoiled")


EDGY = st.text(alphabet=st.one_of(
    st.sampled_from(list("aZ9_-#.")),
    st.sampled_from(["\u0430", "\u0435", "\u043e", "\u212a", "\u0131", "\uff41",  # confusables
                     "\u200f", "\u202e", "\u200d", "\u2066",  # RTL marks, joiners, isolates
                     "\x00", "\x1b", "\t", "\r", "\n", "\u0301", "\U0001f600", "\ufeff"])),
    min_size=1, max_size=40)


@EXAMPLES
@given(nick=EDGY)
def test_unicode_edge_cases_in_nicks(arena, nick):
    hostile, _ = arena
    assume(nick.lower() != "bystander" and not nick.lower().startswith("hostile"))
    frames = hostile.exchange(json.dumps({"op": "nick", "nick": nick, "id": 1}).encode() + b"\n")
    replies = [f for f in frames if f["op"] in ("ok", "error")]
    assert len(replies) == 1
    if valid_nick(nick):
        assert replies[0]["op"] == "ok" and replies[0]["nick"] == nick
    else:
        assert replies[0]["code"] == "invalid_nick"


@EXAMPLES
@given(room=EDGY)
def test_unicode_edge_cases_in_rooms(arena, room):
    hostile, _ = arena
    assume(room != "#arena")
    frames = hostile.exchange(json.dumps({"op": "join", "room": room, "id": 1}).encode() + b"\n"
                              + json.dumps({"op": "leave", "room": room, "id": 2}).encode() + b"\n")
    replies = [f for f in frames if f["op"] in ("ok", "error")]
    assert len(replies) == 2
    if valid_room(room):
        assert replies[0]["op"] == "ok" and replies[0]["room"] == room
        assert replies[1]["op"] == "ok"
    else:
        assert replies[0]["code"] == "invalid_room"
        assert replies[1]["code"] == "not_in_room"


@EXAMPLES
@given(text=EDGY, ascii_only=st.booleans())
def test_any_text_is_delivered_exactly(arena, text, ascii_only):
    hostile, bystander = arena
    frames = hostile.exchange(json.dumps({"op": "say", "room": "#arena", "text": text, "id": 1},
                                         ensure_ascii=ascii_only).encode() + b"\n")
    msg = [f for f in frames if f["op"] == "msg"]
    assert len(msg) == 1 and msg[0]["text"] == text
    assert next(f for f in frames if f["op"] == "ok")["seq"] == msg[0]["seq"]
    got = bystander.recv_until(lambda f: f["op"] == "msg")
    assert got[-1]["text"] == text


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r\r\n", b" \t\n"])
def test_a_frame_split_at_every_byte_gets_one_reply(arena, ending):
    hostile, _ = arena
    client = hostile.fresh()
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = json.dumps({"op": "who", "room": "#arena", "id": "split"}).encode() + ending
    for cut in range(1, len(frame)):
        client.send_raw(frame[:cut])
        client.send_raw(frame[cut:])
        reply = client.reply_to("split")
        assert reply["op"] == "ok" and reply["room"] == "#arena", (cut, reply)
    assert client.drain() == []


def test_a_lone_cr_or_blank_lines_between_frames_change_nothing(arena):
    hostile, _ = arena
    frames = hostile.exchange(b'\r\n \t\r\n{"op":"ping","id":1}\r\n\n\n{"op":"ping",\r"id":2}\n')
    assert frames == [{"op": "ok", "id": 1}, {"op": "ok", "id": 2}]


def test_nothing_leaks_after_hostile_sessions(live):
    before = live.stats()
    for index in range(30):
        client = live.client(f"leaker{index}")
        client.join(f"#leak{index % 3}")
        client.send_raw(b"\xff\xfe{{{\n" + b"[" * 100 + b"\n")
        if index % 2:
            client.send_raw(b"x" * 70000)  # frame_too_large: the server closes it
            client.read_until_closed()
        client.close()
    # The server sees each close a moment later: wait for it, with a deadline.
    with gevent.Timeout(10, AssertionError("hostile sessions were kept")):
        while (after := live.stats())["sessions"] != before["sessions"]:
            gevent.sleep(0.02)
    assert after["registered"] == before["registered"]
    assert after["rooms"] == before["rooms"]  # #leak* had members only, no history
