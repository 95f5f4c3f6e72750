"""decode_request and encode: pure, no sockets (PROTOCOL.md sections 1, 2 and 7)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gchat.protocol import (
    BadFrame,
    Request,
    decode_request,
    encode,
    encode_with_items,
    nick_key,
    valid_id,
    valid_nick,
    valid_room,
)


def nested(depth: int) -> bytes:
    """A frame whose deepest container is at `depth` (the frame itself is level 1)."""
    return b'{"op":"ping","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("line", [
    b"\xff\xfe", b'{"op":"ping","x":"\xc3"}', b"not json", b"{'op':'ping'}", b'{"op":"ping",}',
    b'{"op":"ping","x":NaN}', b'{"op":"ping","x":Infinity}', b'{"op":"ping","x":-Infinity}',
    b'{"op":"ping"} /* c */', b"[]", b'"op"', b"42", b"null", b'{"op":"a"}{"op":"b"}',
    b'{"op":"ping","x":"\\ud800"}', b'{"op":"ping","\\udfff":1}', b'{"op":"ping","x":"\\ude00\\ud83d"}',
    b'\xef\xbb\xbf{"op":"ping"}', b'{"op":"ping","x":"tab\there"}', b'\x0b{"op":"ping"}',
    b'{"op":"ping","x":1' + b"0" * 5000 + b"}", nested(65), b"[" * 60000,
])
def test_bad_frames_have_null_id(line):
    result = decode_request(line)
    assert isinstance(result, BadFrame) and result.id is None and result.reason


def test_depth_64_is_allowed_65_is_not():
    assert isinstance(decode_request(nested(64)), Request)
    assert isinstance(decode_request(nested(65)), BadFrame)
    assert isinstance(decode_request(b'{"op":"ping","x":' + b'{"a":' * 63 + b"1" + b"}" * 63 + b"}"),
                      Request)


@pytest.mark.parametrize("line,request_id", [
    (b'{"id":5}', 5), (b'{"op":5,"id":"a"}', "a"), (b'{"op":null,"id":7}', 7),
    (b'{"op":["x"],"id":1.5}', None), (b'{"id":true}', None),
])
def test_bad_op_carries_a_valid_id(line, request_id):
    result = decode_request(line)
    assert isinstance(result, BadFrame) and result.id == request_id


def test_good_frames():
    request = decode_request(b' \t{"op":"say","room":"r","text":"\\ud83d\\ude00\xc3\xa9","id":3} ')
    assert request == Request("say", 3, True, {"op": "say", "room": "r", "text": "😀é", "id": 3})
    assert decode_request(b'{"op":"x","id":null}').id_ok
    assert not decode_request(b'{"op":"x","id":2.0}').id_ok
    # a repeated member resolves to its last value
    assert decode_request(b'{"op":"a","op":"b"}').op == "b"


def test_valid_names():
    assert valid_nick("a") and valid_nick("Z" + "9" * 31) and not valid_nick("a" * 33)
    assert not valid_nick("a\n") and not valid_nick("é")
    assert valid_room("#a.b-c_d") and valid_room("0") and not valid_room("#") and not valid_room("a\n")
    assert nick_key("AbC") == "abc" and nick_key("\u212a") is None
    assert valid_id(None) and valid_id(-(2**53) + 1) and not valid_id(False)


def test_encode_is_one_compact_utf8_line():
    assert encode({"op": "ok", "id": None, "text": "é\n"}) == '{"op":"ok","id":null,"text":"é\\n"}\n'.encode()


def test_encode_with_items_splices_stored_events():
    line = encode_with_items({"op": "ok", "id": 1}, "history", [b'{"seq":1}', b'{"seq":2}'])
    assert json.loads(line) == {"op": "ok", "id": 1, "history": [{"seq": 1}, {"seq": 2}]}
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(encode_with_items({"op": "ok"}, "messages", [])) == {"op": "ok", "messages": []}


@given(st.binary(max_size=300))
def test_fuzz_any_bytes_give_a_request_or_a_bad_frame(data):
    result = decode_request(data.replace(b"\n", b""))
    assert isinstance(result, Request | BadFrame)
    if isinstance(result, Request):
        assert isinstance(result.op, str) and isinstance(result.body, dict)
        assert result.id_ok == valid_id(result.body.get("id"))


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars | st.text(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.text(max_size=10))
def test_fuzz_any_json_object_with_a_string_op_is_a_request(body, op):
    body["op"] = op
    line = json.dumps(body).encode()
    result = decode_request(line)
    assert isinstance(result, Request) and result.op == op


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@given(st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=6))
def test_encode_gives_the_standard_librarys_bytes(frame):
    """orjson writes what the compact, non-escaping standard encoder would."""
    standard = json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert encode(frame) == standard.encode("utf-8")


@given(st.binary(max_size=80) | st.builds(lambda v: json.dumps(v).encode(), _JSON_VALUES))
def test_the_fast_decoder_agrees_with_the_standard_one(line):
    """decode_request's orjson path takes exactly what the standard path takes."""
    from gchat.protocol import _decode_slowly, _request

    slow = _decode_slowly(line)
    expected = slow if isinstance(slow, BadFrame) else _request(line, slow)
    got = decode_request(line)
    assert type(got) is type(expected)
    if isinstance(got, Request):
        assert got == expected
