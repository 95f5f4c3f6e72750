"""ChatEvent: what the chat state tells sessions (msg, presence, whisper), as one value
that each door renders for its members.

Strategy: an event is PROTOCOL.md's JSON object, encoded once as the JSON line every
JSON session is sent (and the history stores), with its fields kept alongside, or
decoded lazily when the event came as bytes (a cluster node's records). A door other
than JSON lines renders from the fields; a room renders an event once per door
present (core/room.py), never once per member.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import orjson

from ..protocol import encode

__all__ = ["MAX_TOPIC", "ChatEvent", "RoomView", "Topic", "msg_fields"]

MAX_TOPIC = 390  # UTF-8 bytes of a topic (and of a kick reason): IRC's TOPICLEN


class Topic(NamedTuple):
    """A room's topic: its text, who set it and when (ms since the epoch)."""

    text: str
    by: str
    ts: int

    def fields(self) -> dict[str, Any]:
        """As the `topic` object of a join's or who's ok (docs/protocol.md)."""
        return {"text": self.text, "by": self.by, "ts": self.ts}


class RoomView(NamedTuple):
    """What a member sees of a room: members sorted by lower-cased nick, its
    operators' and voiced members' nicks, its topic, whether only operators may set
    it (+t), and whether only operators and voiced members may speak (+m)."""

    members: list[str]
    ops: list[str]
    voiced: list[str]
    topic: Topic | None
    topic_locked: bool
    moderated: bool


def msg_fields(room: str, nick: str | None, text: str, seq: int, notice: bool) -> dict[str, Any]:
    """A `msg` event's object (PROTOCOL.md 5), stamped now; `notice` (an IRC NOTICE) is
    an extension field, present only when true."""
    fields: dict[str, Any] = {"op": "msg", "room": room, "from": nick, "text": text, "seq": seq,
                              "ts": int(time.time() * 1000)}
    if notice:
        fields["notice"] = True
    return fields


class ChatEvent:
    """One event: its JSON line (`json`, with the LF) and its `fields`; `reason` is an
    IRC user's PART or QUIT reason, which IRC shows and PROTOCOL.md does not."""

    __slots__ = ("_fields", "actor", "at", "json", "msgid", "occasion", "reason", "tags", "user")

    def __init__(self, json_line: bytes, fields: dict[str, Any] | None = None,
                 reason: str | None = None) -> None:
        self.json = json_line
        self._fields = fields
        self.reason = reason
        self.tags: dict[str, str] | None = None  # an IRC user's client-only tags (+key)
        self.user: str | None = None  # the actor's IRC user name, for IRC prefixes
        self.actor = 0  # the acting session's id (presence)
        self.occasion: object = None  # shared by the per-room events of one quit or rename
        self.at: float | None = None  # when a presence happened (IRC's server-time)
        self.msgid: str | None = None  # IRC's msgid of a logged event (eventlog.py)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> ChatEvent:
        """The event with these fields, encoded once."""
        return cls(encode(fields), fields)

    @property
    def fields(self) -> dict[str, Any]:
        """The event's JSON object (`op`, `room`, `from`, `text`...)."""
        if self._fields is None:
            self._fields = orjson.loads(self.json)
        return self._fields

    def __repr__(self) -> str:
        return f"ChatEvent({self.json!r})"
