"""GroupCommit: says are stored in batches, then broadcast in seq order.

Strategy (PROTOCOL.md 6, guarantee 2): a message is stored before anyone sees it, and
its sender's `ok` comes after its `msg`. A say assigns the seq, adds the message to
the open batch and returns at once, so a client's pipelined says join the same batch.
One committer greenlet takes the open batch whole and stores it (in the event loop,
or parked on the store's writer thread); says that arrive meanwhile fill the next
batch, so one transaction serves every say that arrived while the last was stored.
Then, without yielding, the committer delivers each message of the batch in order to
the room's other members, then tells its sender (`said`: a JSON session gets the
`msg`, then the `ok`).

Consecutive messages of one room in a batch are delivered as one run (`deliver_run`,
Room.broadcast_run): each member's queue takes them as one blob, while a sender gets
the others' messages one by one and its own msg and ok in place, so every session
receives what message-by-message delivery gives. A run holds at most RUN_FRAMES
messages and 1/RUN_SHARE of a session's frame bound, and each door's rendering of it
at most 1/RUN_SHARE of its byte bound (a bigger one goes message by message, pacing
between), so pacing between runs keeps members that read promptly below their bound.

Batches are stored and delivered one at a time, in the order they were opened, so
each room's messages reach its members in seq order, and each sender's oks come in
request order. (A session waits for its says to be delivered
before it handles any other request: see ChatSession.)

A batch can be large (a hundred says of 4096 characters from each of several
senders): when a member's queue passes its high-water mark, the committer paces
(Flusher.pace), waiting a bounded time for such members to write, between two
messages, so members that read promptly are never pushed to their bound. Other
greenlets run meanwhile; each message's broadcast and its ok are still one step, so
every member sees one order, and a join reads history only up to the last delivered
seq (`ChatRoom.seq`), so it neither misses nor repeats the rest of the batch.

If the store fails, the batch and every say queued behind it fail (their seqs were
assigned after the failed ones): each sender gets an `unavailable` error instead of
its `ok`, and each room's seq counter steps back to its last delivered message, so
seqs stay gapless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Generic, TypeVar

import gevent
from gevent.event import Event

from ..core import Flusher, SessionLimits
from ..errors import StoreError
from .events import ChatEvent
from .history import HistoryStore

if TYPE_CHECKING:
    from .chat import ChatRoom
    from .member import ChatMember

__all__ = ["Batch", "GroupCommit"]

log = logging.getLogger(__name__)

Deliver = Callable[["ChatRoom", int, ChatEvent, "ChatMember"], None]
# (room, seq, the msg event, sender, the request's id)
Pending = tuple["ChatRoom", int, ChatEvent, "ChatMember", "int | str | None"]
# Delivers consecutive messages of one room, the oks to their senders included.
DeliverRun = Callable[["ChatRoom", "list[Pending]"], None]

RUN_FRAMES = 256  # at most this many messages in one run
RUN_SHARE = 8  # a run's bytes and frames stay under 1/RUN_SHARE of a session's bounds

T = TypeVar("T")


def run_bounds(limits: SessionLimits) -> tuple[int, int]:
    """The most messages, and bytes, a run may hold for sessions of `limits`."""
    return min(RUN_FRAMES, limits.max_queue_frames // RUN_SHARE), limits.max_queue_bytes // RUN_SHARE


def consecutive_runs(items: Iterable[T], key: Callable[[T], object], size: Callable[[T], int],
                     max_count: int, max_bytes: int) -> Iterator[list[T]]:
    """`items` in order, cut into runs: consecutive items of one `key` (None: an item
    of its own), at most `max_count` of them and `max_bytes` by `size`."""
    run: list[T] = []
    run_key: object = None
    total = 0
    for item in items:
        item_key, length = key(item), size(item)
        if run and (item_key is None or item_key != run_key or len(run) >= max_count
                    or total + length > max_bytes):
            yield run
            run, total = [], 0
        run.append(item)
        run_key = item_key
        total += length
    if run:
        yield run


M = TypeVar("M")


class Batch(Generic[M]):
    """Says stored in one transaction; `done` is set once they are delivered (or failed)."""

    __slots__ = ("done", "error", "messages")

    def __init__(self) -> None:
        self.messages: list[M] = []
        self.done = Event()
        self.error: StoreError | None = None


class GroupCommit:
    """Stores messages in `store` a batch at a time, then calls `deliver(room, seq,
    event)` for each and sends its sender the ok, in the order they were submitted."""

    def __init__(self, store: HistoryStore, deliver: Deliver, *, pace_limit: float = 1.0,
                 deliver_run: DeliverRun | None = None, run_bounds: tuple[int, int] = (1, 0),
                 failed: Callable[[ChatRoom], None] = lambda room: None,
                 committed: Callable[[int, float], None] = lambda count, seconds: None) -> None:
        self.store = store
        self._committed = committed  # (messages, seconds) of each stored batch: metrics
        self._failed = failed  # a room whose says failed: forget it if it is now empty
        self.pace_limit = pace_limit  # at most this long waiting for backlogged members
        self._flusher = Flusher.for_current_hub()
        self._deliver = deliver
        self._deliver_run = deliver_run  # None: message by message
        self._run_frames, self._run_bytes = run_bounds  # a run's messages, and JSON bytes
        self._open: Batch[Pending] = Batch()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._committing: Batch[Pending] | None = None
        self._committer = gevent.spawn(self._run)

    def submit(self, room: ChatRoom, seq: int, event: ChatEvent, sender: ChatMember,
               request_id: int | str | None) -> Batch[Pending]:
        """Queue `event` (a msg), message `seq` of `room`, to be stored,
        delivered, then answered with `ok`; return at once with the batch it is in."""
        batch = self._open
        batch.messages.append((room, seq, event, sender, request_id))
        if len(batch.messages) == 1:
            self._idle.clear()
            self._wake.set()
        return batch

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted message is stored and delivered."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain, then stop the committer."""
        self.drain(timeout)
        self._committer.kill()

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Wait until every say submitted so far is delivered (or has failed): batches
        are delivered in order, so the newest one is enough. False on a timeout."""
        newest = self._open if self._open.messages else self._committing
        return newest is None or newest.done.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._open.messages:
                batch, self._open = self._open, Batch[Pending]()
                self._committing = batch
                try:
                    self._commit(batch)
                except StoreError as exc:
                    self._fail(batch, exc)
                except Exception:  # a bug: log it, keep serving the others
                    log.exception("delivering a batch failed")
                batch.done.set()
            self._committing = None
            self._idle.set()

    def _commit(self, batch: Batch[Pending]) -> None:
        started = perf_counter()
        self.store.append_batch([(room.name, seq, event.json[:-1])
                                 for room, seq, event, _, _ in batch.messages])
        self._committed(len(batch.messages), perf_counter() - started)
        deliver, flusher = self._deliver, self._flusher
        flusher.delivering = True
        try:
            for run in consecutive_runs(batch.messages, _room_of, _json_size,
                                        self._run_frames, self._run_bytes):
                if len(run) > 1 and self._deliver_run is not None:
                    self._deliver_run(run[0][0], run)
                    flusher.pace(self.pace_limit)
                    continue
                for room, seq, event, sender, request_id in run:
                    deliver(room, seq, event, sender)
                    sender.said(room.name, seq, event, request_id)
                    flusher.pace(self.pace_limit)
        finally:
            flusher.delivering = False

    def _fail(self, batch: Batch[Pending], error: StoreError) -> None:
        queued, self._open = self._open, Batch[Pending]()
        for failed in (batch, queued):
            failed.error = error
            for room, _, _, sender, request_id in failed.messages:
                room.next_seq = room.seq
                # The store failed (the server logged why), so the message was not
                # stored, not delivered, and used no seq.
                sender.say_failed(request_id, "history is unavailable; try again later")
                self._failed(room)
        queued.done.set()


def _room_of(pending: Pending) -> object:
    return pending[0]


def _json_size(pending: Pending) -> int:
    return len(pending[2].json)
