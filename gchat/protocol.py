"""The gchat wire protocol, version 1 (../shared/PROTOCOL.md): decoding and encoding.

Pure code: a line of bytes in, a Request or a BadFrame out; a dict in, a line of
bytes out. No sockets, no gevent, so it can be tested and fuzzed on its own.

Decoding follows PROTOCOL.md sections 1 and 7, in this order: UTF-8, RFC 8259 JSON
(no NaN or Infinity), depth at most 64, no unpaired surrogate, an object, a string
`op`. Failing any of these is a BadFrame; its `id` is the frame's id only when the
frame got as far as "an object whose only fault is its op" and that id is valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "MAX_DEPTH",
    "BadFrame",
    "Request",
    "bye",
    "decode_request",
    "encode",
    "encode_with_items",
    "is_integer",
    "nick_key",
    "valid_id",
    "valid_nick",
    "valid_room",
]

MAX_DEPTH = 64
MAX_ID = 2**53

_NICK = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_ROOM = re.compile(r"#?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 4x slower, once per request
class Request:
    """A well-formed frame: its `op`, its `id` (None when absent or invalid) and body."""

    op: str
    id: int | str | None
    id_ok: bool
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that gets `bad_frame`; `id` is the id to echo (or None)."""

    reason: str
    id: int | str | None = None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def decode_request(line: bytes) -> Request | BadFrame:
    """Decode one line (LF and CR already removed) into a Request or a BadFrame."""
    try:
        value = orjson.loads(line)  # the fast path: orjson takes what the standard one does
    except orjson.JSONDecodeError:
        # Not valid, or beyond orjson (integers past 64 bits, nesting past 1024): the
        # standard library decides, and says why as it always did.
        value = _decode_slowly(line)
        if isinstance(value, BadFrame):
            return value
    return _request(line, value)


def _decode_slowly(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return BadFrame("the frame is not valid UTF-8")
    try:
        return _decoder.decode(text)
    except RecursionError:
        return BadFrame(f"the frame is nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, a number too long
        return BadFrame(f"the frame is not valid JSON: {exc}")


def _request(line: bytes, value: Any) -> Request | BadFrame:
    # Cheap tests first: most frames have few brackets and no \u escapes.
    if line.count(b"{") + line.count(b"[") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return BadFrame(f"the frame is nested deeper than {MAX_DEPTH} levels")
    if _ESCAPED_SURROGATE.search(line) and _has_lone_surrogate(value):
        return BadFrame("the frame holds a string with an unpaired surrogate")
    if not isinstance(value, dict):
        return BadFrame("the frame is not a JSON object")
    raw_id = value.get("id")
    id_ok = valid_id(raw_id)
    request_id = raw_id if id_ok else None
    op = value.get("op")
    if not isinstance(op, str):
        return BadFrame('the frame has no string "op"', request_id)
    return Request(op, request_id, id_ok, value)


def _depth(value: Any) -> int:
    """Nesting depth of objects and arrays; the outermost container is level 1."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def is_integer(value: Any) -> bool:
    """True for a JSON integer (no fraction or exponent; booleans are not numbers)."""
    return type(value) is int


def valid_id(value: Any) -> bool:
    """PROTOCOL.md 2: an integer of magnitude below 2^53, a string of at most 64
    code points, or null."""
    if value is None:
        return True
    if type(value) is int:
        return -MAX_ID < value < MAX_ID
    return isinstance(value, str) and len(value) <= 64


def valid_nick(value: str) -> bool:
    """PROTOCOL.md 3: the whole string matches ^[A-Za-z][A-Za-z0-9_-]{0,31}$."""
    return _NICK.fullmatch(value) is not None


def valid_room(value: str) -> bool:
    """PROTOCOL.md 3: the whole string matches ^#?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$."""
    return _ROOM.fullmatch(value) is not None


def nick_key(nick: str) -> str | None:
    """The key nicks are compared by: ASCII case folded. None for a non-ASCII string,
    which can name no one (str.lower would fold the Kelvin sign to 'k')."""
    return nick.lower() if nick.isascii() else None


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode(frame: dict[str, Any]) -> bytes:
    """One frame as a line: compact UTF-8 JSON and a LF (orjson: the same bytes as
    the standard library's compact, non-ASCII-escaping encoder, several times faster)."""
    try:
        return orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # an integer past 64 bits: the standard library has no limit
        return (_encoder.encode(frame) + "\n").encode("utf-8")


def bye(reason: str) -> bytes:
    """The `bye` event sent just before the server closes (PROTOCOL.md 5)."""
    return encode({"op": "bye", "reason": reason})


def encode_with_items(frame: dict[str, Any], key: str, items: list[bytes]) -> bytes:
    """Like `encode`, plus `key`: a JSON array of already encoded items (stored
    events are kept as the exact bytes once delivered, so they are never re-encoded)."""
    head = encode(frame)[:-2]
    return b"%s,\"%s\":[%s]}\n" % (head, key.encode("ascii"), b",".join(items))
