"""Room history: the store interface and the in-memory store.

A store keeps, per room, the `msg` events exactly as they were delivered (the encoded
JSON bytes, no LF), keyed by seq, which counts from 1 with no gaps. Rooms hold their
own seq counter, started from `last_seq` when the room is (re)created, so seq never
restarts while a stored message is kept (PROTOCOL.md 4). The server writes whole
batches (group commit, publish.py); reads see only what `append_batch` has returned
for. SqliteHistory (sqlite_store.py), the default, implements the same interface.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Protocol

from .accounts import AccountStore, MemoryAccounts
from .eventlog import EventLog, MemoryEventLog, room_key
from .events import Topic

__all__ = ["HistoryReader", "HistoryStore", "MemoryHistory"]


class HistoryReader(Protocol):
    """What the `history` op reads; a store, or a cluster's backplane. Oldest first."""

    def latest(self, room: str, limit: int) -> list[bytes]:
        """The newest `limit` messages."""

    def after(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The earliest `limit` messages with a seq greater than `seq`."""

    def before(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The latest `limit` messages with a seq less than `seq`."""


class HistoryStore(AccountStore, EventLog, Protocol):
    """What the chat server needs of a history store (accounts and event logs included:
    the durable store keeps them too). Items are oldest first."""

    def append_batch(self, messages: Sequence[tuple[str, int, bytes]]) -> None:
        """Store (room, seq, event) messages, each seq its room's last_seq + 1, all or
        none; block the calling greenlet (never the hub) until they are durable.
        Raises StoreError."""

    def last_seq(self, room: str) -> int:
        """The seq of the room's newest stored message, 0 if none."""

    def first_seq(self, room: str) -> int:
        """The seq of the room's oldest stored message, 0 if none."""

    def latest(self, room: str, limit: int) -> list[bytes]:
        """The newest `limit` messages."""

    def after(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The earliest `limit` messages with a seq greater than `seq`."""

    def before(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The latest `limit` messages with a seq less than `seq`."""

    def rooms(self) -> list[str]:
        """Names of the rooms that have stored messages, least recently written first."""

    def room_count(self) -> int:
        """How many rooms have stored messages."""

    def forget(self, rooms: Sequence[str]) -> None:
        """Delete every stored message and the topic of `rooms`, all or none; blocks
        the calling greenlet (never the hub). Raises StoreError."""

    def topic(self, room: str) -> Topic | None:
        """The room's stored topic, None if it has none."""

    def set_topic(self, room: str, topic: Topic | None) -> None:
        """Store (None: delete) the room's topic, durably; blocks the calling greenlet
        (never the hub). Raises StoreError."""

    def check(self) -> str | None:
        """Why the store cannot be used now, or None if it answers (GET /healthz)."""

    def close(self) -> None:
        """Release the store's resources."""


class MemoryHistory(MemoryAccounts, MemoryEventLog):
    """History (and accounts) in memory, at most `history_max` messages per room; lost
    on exit."""

    def __init__(self, history_max: int = 10_000) -> None:
        MemoryAccounts.__init__(self)
        MemoryEventLog.__init__(self)
        self.history_max = history_max
        self._rooms: dict[str, deque[bytes]] = {}
        self._last: dict[str, int] = {}
        self._topics: dict[str, Topic] = {}

    def append_batch(self, messages: Sequence[tuple[str, int, bytes]]) -> None:
        for room, seq, event in messages:
            stored = self._rooms.get(room)
            if stored is None:
                stored = self._rooms[room] = deque(maxlen=self.history_max)
            stored.append(event)
            self._last.pop(room, None)  # to the end: the dict's order is the rooms' last writes
            self._last[room] = seq

    def last_seq(self, room: str) -> int:
        return self._last.get(room, 0)

    def first_seq(self, room: str) -> int:
        messages = self._rooms.get(room)
        return self._last[room] - len(messages) + 1 if messages else 0

    def latest(self, room: str, limit: int) -> list[bytes]:
        messages = self._rooms.get(room)
        if not messages:
            return []
        return list(islice(messages, max(0, len(messages) - limit), None))

    def after(self, room: str, seq: int, limit: int) -> list[bytes]:
        messages = self._rooms.get(room)
        if not messages:
            return []
        start = max(0, seq + 1 - self.first_seq(room))
        return list(islice(messages, start, start + limit))

    def before(self, room: str, seq: int, limit: int) -> list[bytes]:
        messages = self._rooms.get(room)
        if not messages:
            return []
        stop = min(len(messages), max(0, seq - self.first_seq(room)))
        return list(islice(messages, max(0, stop - limit), stop))

    def rooms(self) -> list[str]:
        return list(self._last)

    def room_count(self) -> int:
        return len(self._last)

    def delete_account(self, key: str) -> bool:
        """Delete the account and its private logs."""
        self.log_forget_owner(key)
        return super().delete_account(key)

    def forget(self, rooms: Sequence[str]) -> None:
        for room in rooms:
            self._rooms.pop(room, None)
            self._last.pop(room, None)
            self._topics.pop(room, None)
            self.log_forget(room_key(room))

    def topic(self, room: str) -> Topic | None:
        return self._topics.get(room)

    def set_topic(self, room: str, topic: Topic | None) -> None:
        if topic is None:
            self._topics.pop(room, None)
        else:
            self._topics[room] = topic

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        self._rooms.clear()
        self._last.clear()
        self._topics.clear()
