"""CHATHISTORY (IRCv3 draft/chathistory): parse a query, select what it asks for.

Strategy: every replayable item has a position (eventlog.py): a room message
`SEQ * ROOM_STEP`, a room event between two messages, a private message
`ts * 1000 + n`. A reference (`msgid=`, `timestamp=`) becomes a position bound, so
each subcommand is one range of positions, read oldest or newest first:

    LATEST * / ref    newest `limit` after ref (or of all)
    BEFORE ref        newest `limit` before ref
    AFTER ref         oldest `limit` after ref
    BETWEEN a b       oldest `limit` between a and b, newest if a is after b
    AROUND ref        limit // 2 before ref, the rest from ref on

`parse_query` is pure (params in, a Query or QueryError out); `select` reads a Source:
a room's messages merged with its events (RoomSource), or a private log (LogSource).
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .eventlog import ROOM_STEP, EventLog, LogEntry

__all__ = ["MAX_LIMIT", "SUBCOMMANDS", "Item", "LogSource", "Query", "QueryError", "RoomSource",
           "parse_query", "parse_timestamp", "select"]

MAX_LIMIT = 100  # ISUPPORT CHATHISTORY: the most items one query returns
SUBCOMMANDS = ("LATEST", "BEFORE", "AFTER", "BETWEEN", "AROUND", "TARGETS")
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z")
_BIG = 2**62  # past any position: a reference beyond it names nothing

Ref = tuple[str, Any]  # ("*", None), ("msgid", str), ("timestamp", ms)


class QueryError(Exception):
    """A query CHATHISTORY refuses: FAIL CHATHISTORY `code` with `context`."""

    def __init__(self, code: str, context: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.code, self.context, self.message = code, context, message


@dataclass(frozen=True)
class Query:
    """A parsed CHATHISTORY: subcommand, target (as written; TARGETS: none), references
    (one, two for BETWEEN and TARGETS), limit (at most MAX_LIMIT)."""

    sub: str
    target: str
    refs: tuple[Ref, ...]
    limit: int


class Item:
    """One selected item: its position, time (ms), msgid and event object."""

    __slots__ = ("fields", "msgid", "pos", "ts")

    def __init__(self, pos: int, ts: int, msgid: str, fields: dict[str, Any]) -> None:
        self.pos, self.ts, self.msgid, self.fields = pos, ts, msgid, fields

    def __repr__(self) -> str:
        return f"Item({self.pos}, {self.msgid!r})"


def parse_timestamp(text: str) -> int | None:
    """`YYYY-MM-DDThh:mm:ss[.sss]Z` as ms since the epoch, or None."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    *fields, fraction = match.groups()
    try:
        seconds = calendar.timegm(time.struct_time((*map(int, fields), 0, 0, 0)))
    except (ValueError, OverflowError):
        return None
    return seconds * 1000 + int((fraction or "0").ljust(3, "0")[:3])


def _ref(sub: str, text: str, star: bool = False) -> Ref:
    if star and text == "*":
        return ("*", None)
    kind, _, value = text.partition("=")
    if kind == "msgid" and value:
        return ("msgid", value)
    if kind == "timestamp":
        ms = parse_timestamp(value)
        if ms is not None:
            return ("timestamp", ms)
    raise QueryError("INVALID_PARAMS", (sub, text), "Invalid message reference")


def parse_query(params: tuple[str, ...]) -> Query:
    """A CHATHISTORY command's parameters as a Query; QueryError if they are not one."""
    if not params:
        raise QueryError("NEED_MORE_PARAMS", ("*",), "Missing parameters")
    sub = params[0].upper()
    if sub not in SUBCOMMANDS:
        raise QueryError("INVALID_PARAMS", (params[0],), "Unknown subcommand")
    needed = {"BETWEEN": 5, "TARGETS": 4}.get(sub, 4)
    if len(params) < needed:
        raise QueryError("NEED_MORE_PARAMS", (sub,), "Missing parameters")
    limit_text = params[needed - 1]
    if not limit_text.isascii() or not limit_text.isdecimal():
        raise QueryError("INVALID_PARAMS", (sub, limit_text), "Invalid limit")
    limit = min(int(limit_text), MAX_LIMIT)
    if sub == "TARGETS":
        refs = (_ref(sub, params[1]), _ref(sub, params[2]))
        if any(kind != "timestamp" for kind, _ in refs):
            raise QueryError("INVALID_PARAMS", (sub,), "TARGETS takes timestamps")
        return Query(sub, "", refs, limit)
    if sub == "BETWEEN":
        return Query(sub, params[1], (_ref(sub, params[2]), _ref(sub, params[3])), limit)
    return Query(sub, params[1], (_ref(sub, params[2], star=sub == "LATEST"),), limit)


class Source(Protocol):
    """What a query reads: positions, their times, their items."""

    def range(self, low: int | None, high: int | None, limit: int, newest: bool) -> list[Item]:
        """Items with low < pos < high, oldest first: the earliest `limit`, or the latest."""

    def seek(self, ts: int, strict: bool) -> int | None:
        """The least position of an item with ts >= `ts` (> if strict), or None."""

    def position(self, msgid: str) -> int | None:
        """The position a msgid of this source names, or None."""


def select(source: Source, query: Query) -> list[Item]:
    """The items `query` (not TARGETS) selects from `source`, oldest first."""
    limit, refs = query.limit, query.refs
    if limit == 0:
        return []

    def after(ref: Ref) -> int | None:  # a lower bound: items after ref
        if ref[0] == "msgid":
            return source.position(ref[1])
        found = source.seek(ref[1], strict=True)
        return _BIG if found is None else found - 1

    def before(ref: Ref) -> int | None:  # an upper bound: items before ref
        if ref[0] == "msgid":
            return source.position(ref[1])
        found = source.seek(ref[1], strict=False)
        return _BIG if found is None else found

    sub = query.sub
    if sub == "LATEST":
        if refs[0][0] == "*":
            return source.range(None, None, limit, newest=True)
        return _bounded(source, after(refs[0]), None, limit, newest=True)
    if sub == "BEFORE":
        return _bounded(source, None, before(refs[0]), limit, newest=True)
    if sub == "AFTER":
        return _bounded(source, after(refs[0]), None, limit, newest=False)
    if sub == "BETWEEN":
        first, second = before(refs[0]), before(refs[1])
        if first is None or second is None:
            return []
        if first <= second:
            return _bounded(source, after(refs[0]), before(refs[1]), limit, newest=False)
        return _bounded(source, after(refs[1]), before(refs[0]), limit, newest=True)
    center = before(refs[0])  # AROUND
    if center is None:
        return []
    earlier = source.range(None, center, limit // 2, newest=True) if limit // 2 else []
    return earlier + source.range(center - 1, None, limit - len(earlier), newest=False)


def _bounded(source: Source, low: int | None, high: int | None, limit: int,
             newest: bool) -> list[Item]:
    """A range whose bounds came from references: none if a msgid named nothing."""
    if (low is None and high is None) or (low is not None and low >= _BIG):
        return []
    return source.range(low, high, limit, newest)


def _item(entry: LogEntry) -> Item:
    return Item(entry.pos, entry.ts, entry.msgid, json.loads(entry.event))


class LogSource:
    """A private log (dm:OWNER:PEER): positions are `ts * 1000 + n`, msgids `~POS`."""

    def __init__(self, log: EventLog, key: str, with_events: bool) -> None:
        self.log, self.key, self.with_events = log, key, with_events

    def range(self, low: int | None, high: int | None, limit: int, newest: bool) -> list[Item]:
        """Without event-playback, TAGMSGs are skipped and more is read in their place."""
        items: list[Item] = []
        for _ in range(10):  # at most 10 reads, so a wall of TAGMSGs costs a bounded time
            entries = self.log.log_range(self.key, low, high, limit, newest)
            got = [_item(entry) for entry in entries]
            kept = got if self.with_events else [i for i in got if i.fields["op"] != "tagmsg"]
            items = kept + items if newest else items + kept
            if len(entries) < limit or len(items) >= limit:
                break
            if newest:
                high = entries[0].pos
            else:
                low = entries[-1].pos
        return items[-limit:] if newest else items[:limit]

    def seek(self, ts: int, strict: bool) -> int | None:
        return (ts + 1) * 1000 if strict else ts * 1000

    def position(self, msgid: str) -> int | None:
        digits = msgid[1:]
        if msgid[:1] != "~" or not (digits.isascii() and digits.isdecimal()) \
                or len(digits) > 18:
            return None
        return int(digits)


class RoomReader(Protocol):
    def history(self, name: str, before: int | None, after: int | None,
                limit: int) -> list[bytes]: ...


class RoomSource:
    """A room: its messages (position SEQ * ROOM_STEP, msgid ROOM:SEQ) merged with its
    logged events (ROOM:SEQ.k) when `with_events` (draft/event-playback)."""

    def __init__(self, reader: RoomReader, log: EventLog | None, room: str, key: str) -> None:
        self.reader, self.log, self.room, self.key = reader, log, room, key

    def _messages(self, low: int | None, high: int | None, limit: int,
                  newest: bool) -> list[Item]:
        low_seq = None if low is None else max(0, low // ROOM_STEP)
        high_seq = None if high is None else -(-high // ROOM_STEP)  # ceil
        if newest:
            raw = self.reader.history(self.room, high_seq, None, limit)
            items = [self._message(data) for data in raw]
            return [i for i in items if low is None or i.pos > low]
        raw = self.reader.history(self.room, None, low_seq or 0, limit)
        items = [self._message(data) for data in raw]
        return [i for i in items if high is None or i.pos < high]

    def _message(self, data: bytes) -> Item:
        fields = json.loads(data)
        return Item(fields["seq"] * ROOM_STEP, fields["ts"], f"{self.room}:{fields['seq']}",
                    fields)

    def range(self, low: int | None, high: int | None, limit: int, newest: bool) -> list[Item]:
        items = self._messages(low, high, limit, newest)
        if self.log is not None:
            items += [_item(entry) for entry in self.log.log_range(self.key, low, high, limit,
                                                                    newest)]
            items.sort(key=lambda item: item.pos)
        return items[-limit:] if newest else items[:limit]

    def seek(self, ts: int, strict: bool) -> int | None:
        found = self._seek_message(ts, strict)
        if self.log is not None:
            event = self.log.log_seek(self.key, ts, strict)
            if event is not None and (found is None or event < found):
                found = event
        return found

    def _seek_message(self, ts: int, strict: bool) -> int | None:
        """Binary search over the stored messages (their ts grow with their seq)."""
        newest = self.reader.history(self.room, None, None, 1)
        oldest = self.reader.history(self.room, None, 0, 1)
        if not newest:
            return None

        def passes(fields: dict[str, Any]) -> bool:
            return fields["ts"] > ts if strict else fields["ts"] >= ts

        last, first = json.loads(newest[0]), json.loads(oldest[0])
        if not passes(last):
            return None
        low, high = first["seq"], last["seq"]  # the answer is in [low, high]
        while low < high:
            middle = (low + high) // 2
            found = self.reader.history(self.room, None, middle - 1, 1)
            fields = json.loads(found[0])
            if passes(fields):  # seqs have no gaps: fields["seq"] is `middle`
                high = middle
            else:
                low = middle + 1
        return low * ROOM_STEP

    def position(self, msgid: str) -> int | None:
        room, _, where = msgid.rpartition(":")
        seq, _, event = where.partition(".")
        if room != self.room or not (seq.isascii() and seq.isdecimal()) or len(seq) > 15 \
                or not (event == "" or (event.isascii() and event.isdecimal()
                                        and len(event) <= 4)):
            return None
        return int(seq) * ROOM_STEP + int(event or 0)
