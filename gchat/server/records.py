"""Records: what cluster nodes publish to each other on the backplane's event channel.

A payload is one or more records, each a header line and a frame line, both ending in
LF; the frame is the exact event that members receive (a JSON line, so it holds no raw
LF). Headers are words separated by single spaces; nicks and room names hold no spaces
(PROTOCOL.md 3), tags and session ids are made of digits and ':':

    M <room> <seq> <tag>[ <tags>]        a msg of <room>; <tag> finds its sender's ok;
                                         <tags>: an IRC sender's client-only tags, as
                                         IRC writes them (escaped, no spaces, no "@")
    P <room> <seq> <actor> <tag>[ <why>] a presence event in <room> after msg <seq>;
                                         <actor> (a session id) does not receive it;
                                         <tag> completes the actor's join ("-": none);
                                         <why>, the rest of the line: an IRC user's
                                         PART or QUIT reason (IRC shows it, JSON not)
    W <session> <position>[ <tags>]      a whisper to one session; <position> makes its
                                         msgid and orders it in the private logs
                                         (eventlog.py); <tags> as in M
    E <room> <tag>                       a room event every member receives (topic,
                                         mode); <tag> finds the node that caused it
    X <room> <tag> <code>                a say refused (its sender is not in <room>, or
                                         may not speak there: not_in_room, moderated),
                                         in its place among the batch's msgs; the
                                         frame line is "{}"

The Lua scripts of backplane.py write these; this module reads them, with no I/O, so
it can be tested and fuzzed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GchatError

__all__ = ["BadRecord", "Msg", "Presence", "Record", "Refusal", "RoomChange", "Whisper",
           "parse_records"]


class BadRecord(GchatError):
    """A payload on the event channel is not a well-formed list of records."""


@dataclass(frozen=True, slots=True)
class Msg:
    room: str
    seq: int
    tag: str
    frame: bytes  # with its LF
    tags: str = ""


@dataclass(frozen=True, slots=True)
class Presence:
    room: str
    seq: int
    actor: int
    tag: str
    frame: bytes
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Whisper:
    session: int
    frame: bytes
    position: int = 0
    tags: str = ""


@dataclass(frozen=True, slots=True)
class RoomChange:
    room: str
    tag: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    room: str
    tag: str
    code: str
    frame: bytes


Record = Msg | Presence | Whisper | RoomChange | Refusal


def _int(word: bytes) -> int:
    if not word.isdigit():
        raise BadRecord(f"not a number: {word[:40]!r}")
    return int(word)


def parse_records(payload: bytes) -> list[Record]:
    """The records of one payload, in order; raises BadRecord."""
    lines = payload.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"" or len(lines) % 2 != 1:
        raise BadRecord("a payload is header and frame lines, each ending in LF")
    records: list[Record] = []
    for i in range(0, len(lines) - 1, 2):
        kind = lines[i][:2]
        words = lines[i].split(b" ", 5 if kind == b"P " else 4 if kind == b"M " else -1)
        frame = lines[i + 1] + b"\n"
        count = len(words)
        try:
            if kind == b"M " and count in (4, 5) and b" " not in words[-1]:
                records.append(Msg(words[1].decode(), _int(words[2]), words[3].decode(), frame,
                                   words[4].decode() if count == 5 else ""))
            elif kind == b"P " and count in (5, 6):
                records.append(Presence(words[1].decode(), _int(words[2]), _int(words[3]),
                                        words[4].decode(), frame,
                                        words[5].decode() if count == 6 else None))
            elif kind == b"W " and count in (3, 4):
                records.append(Whisper(_int(words[1]), frame, _int(words[2]),
                                       words[3].decode() if count == 4 else ""))
            elif kind == b"E " and count == 3:
                records.append(RoomChange(words[1].decode(), words[2].decode(), frame))
            elif kind == b"X " and count == 4:
                records.append(Refusal(words[1].decode(), words[2].decode(), words[3].decode(),
                                       frame))
            else:
                raise BadRecord(f"unknown record header {lines[i][:80]!r}")
        except UnicodeDecodeError:
            raise BadRecord(f"header is not UTF-8: {lines[i][:80]!r}") from None
    return records
