"""Event logs: what IRC's chathistory replays besides a room's messages.

Strategy: a log is a list of entries under a string key, each with a position that
orders it, its time (ms), its msgid and the event's JSON. Two kinds of log exist:

- `dm:OWNER:PEER`: the private messages between the account OWNER (folded) and the
  nick PEER (folded), kept for every participant with an account (draft/chathistory
  for private targets). A position is `ts * 1000 + n` (n counts whispers within a
  millisecond), so it orders by time across every conversation, and a timestamp
  bound is a position bound with no lookup. The msgid is `~POSITION`.
- `room:ROOM`: a room's events other than messages (topic changes, persisted TAGMSGs),
  replayed with draft/event-playback. An event after message SEQ has a position
  `SEQ * 1024 + k` (its k-th since that message), so positions merge with the room's
  messages, whose position is `SEQ * 1024`. The msgid is `ROOM:SEQ.k`.

The stores (MemoryEventLog here, SqliteHistory, the cluster's RedisBackplane) keep at
most LOG_MAX entries per log, the oldest going first.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["LOG_MAX", "ROOM_STEP", "EventLog", "LogEntry", "MemoryEventLog", "dm_key",
           "dm_position", "room_key"]

LOG_MAX = 10_000  # entries kept per log
MAX_PEERS = 1000  # private logs kept per account: past it, the least recent one goes
ROOM_STEP = 1024  # positions per room message: room events after it take the ones between
_WITHIN_MS = itertools.count()


class LogEntry(NamedTuple):
    """One logged event: position, time (ms), msgid, the event's JSON (no LF)."""

    pos: int
    ts: int
    msgid: str
    event: bytes


def dm_key(owner: str, peer: str) -> str:
    """The log of `owner`'s (an account) private messages with `peer` (a nick)."""
    return f"dm:{owner.lower()}:{peer.lower()}"


def room_key(room: str) -> str:
    return f"room:{room}"


def dm_position(ts: int) -> int:
    """A fresh position for a private message sent at `ts` (ms)."""
    return ts * 1000 + next(_WITHIN_MS) % 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class EventLog(Protocol):
    """Where event logs are kept."""

    def log_append(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        """Append (key, entry) pairs, each entry's position above its log's last."""

    def log_range(self, key: str, low: int | None, high: int | None, limit: int,
                  newest: bool) -> list[LogEntry]:
        """Entries with low < pos < high (None: unbounded), oldest first: the
        earliest `limit` of them, or the latest if `newest`."""

    def log_seek(self, key: str, ts: int, strict: bool) -> int | None:
        """The least position of an entry with ts >= `ts` (> if `strict`), or None."""

    def log_last(self, key: str) -> int | None:
        """The position of the log's last entry, or None if it has none."""

    def log_peers(self, owner: str) -> list[tuple[str, int]]:
        """(peer, ts of the last message) of every private log of account `owner`
        (an Account.id), at most MAX_PEERS."""

    def log_forget(self, key: str) -> None:
        """Delete a log (its room is gone)."""


class MemoryEventLog:
    """Event logs in memory (--store memory): lost on exit."""

    def __init__(self) -> None:
        self._logs: dict[str, list[LogEntry]] = {}
        self._peers: dict[str, dict[str, int]] = {}  # owner: peer: ts of the last message

    def log_append(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        for key, entry in entries:
            log = self._logs.setdefault(key, [])
            log.append(entry)
            if len(log) > LOG_MAX:
                del log[:len(log) - LOG_MAX]
            if key.startswith("dm:"):
                _, owner, peer = key.split(":", 2)
                peers = self._peers.setdefault(owner, {})
                peers[peer] = entry.ts
                if len(peers) > MAX_PEERS:
                    oldest = min(peers, key=peers.__getitem__)
                    del peers[oldest]
                    self._logs.pop(dm_key(owner, oldest), None)

    def log_forget_owner(self, key: str) -> None:
        """Delete the private logs of every account of nick key `key`."""
        for owner in [owner for owner in self._peers if owner.startswith(f"{key}~")]:
            for peer in self._peers.pop(owner):
                self._logs.pop(dm_key(owner, peer), None)

    def log_range(self, key: str, low: int | None, high: int | None, limit: int,
                  newest: bool) -> list[LogEntry]:
        log = self._logs.get(key, [])
        positions = [entry.pos for entry in log]
        start = 0 if low is None else bisect.bisect_right(positions, low)
        end = len(log) if high is None else bisect.bisect_left(positions, high)
        chosen = log[start:end]
        return chosen[-limit:] if newest else chosen[:limit]

    def log_seek(self, key: str, ts: int, strict: bool) -> int | None:
        return next((entry.pos for entry in self._logs.get(key, [])
                     if entry.ts > ts or (entry.ts == ts and not strict)), None)

    def log_last(self, key: str) -> int | None:
        log = self._logs.get(key)
        return log[-1].pos if log else None

    def log_peers(self, owner: str) -> list[tuple[str, int]]:
        return list(self._peers.get(owner.lower(), {}).items())

    def log_forget(self, key: str) -> None:
        self._logs.pop(key, None)
