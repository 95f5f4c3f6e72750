"""GroupCommit: says are stored in batches, then broadcast in seq order.

Strategy (PROTOCOL.md 6, guarantee 2): a message is stored before anyone sees it, and
its sender's `ok` comes after its `msg`. The say's greenlet assigns the seq, adds the
message to the open batch and waits. One committer greenlet takes the open batch whole
and stores it; the store may park that greenlet on its writer thread while new says
fill the next batch, so one transaction serves every say that arrived meanwhile. Then,
without yielding, the committer delivers each message of the batch in order and wakes
the waiters. Batches are stored and delivered one at a time, in the order they were
opened, so each room's messages reach its members in seq order.

If the store fails, the batch and every say queued behind it fail (their seqs were
assigned after the failed ones), and each room's seq counter steps back to its last
delivered message, so seqs stay gapless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ..errors import StoreError
from .history import HistoryStore

if TYPE_CHECKING:
    from .chat import ChatRoom

__all__ = ["GroupCommit"]

log = logging.getLogger(__name__)

Deliver = Callable[["ChatRoom", int, bytes], None]


class _Batch:
    __slots__ = ("done", "error", "messages")

    def __init__(self) -> None:
        self.messages: list[tuple[ChatRoom, int, bytes]] = []
        self.done = Event()
        self.error: StoreError | None = None


class GroupCommit:
    """Stores messages in `store` a batch at a time, then calls `deliver(room, seq,
    event)` for each, in the order they were submitted."""

    def __init__(self, store: HistoryStore, deliver: Deliver) -> None:
        self.store = store
        self._deliver = deliver
        self._open = _Batch()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._committer = gevent.spawn(self._run)

    def submit(self, room: ChatRoom, seq: int, event: bytes) -> None:
        """Store and deliver `event` (a msg frame with its LF), message `seq` of `room`;
        return once it is delivered. Raises StoreError if it could not be stored."""
        batch = self._open
        batch.messages.append((room, seq, event))
        self._idle.clear()
        self._wake.set()
        batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted message is stored and delivered."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain, then stop the committer."""
        self.drain(timeout)
        self._committer.kill()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._open.messages:
                batch, self._open = self._open, _Batch()
                try:
                    self._commit(batch)
                except StoreError as exc:
                    self._fail(batch, exc)
                except Exception:  # a bug: log it, keep serving the others
                    log.exception("delivering a batch failed")
                batch.done.set()
            self._idle.set()

    def _commit(self, batch: _Batch) -> None:
        self.store.append_batch([(room.name, seq, event[:-1]) for room, seq, event in batch.messages])
        deliver = self._deliver
        for room, seq, event in batch.messages:
            deliver(room, seq, event)

    def _fail(self, batch: _Batch, error: StoreError) -> None:
        queued, self._open = self._open, _Batch()
        for failed in (batch, queued):
            failed.error = error
            for room, _, _ in failed.messages:
                room.next_seq = room.seq
        queued.done.set()
