"""Session: one connection, a reader and a single writer, and four hooks.

Strategy: one reader at a time owns the socket's input and feeds received bytes to
`on_data`, which frames them and calls `on_recv` once per non-blank line, in order.
The reader is the caller's greenlet (`run`), a greenlet of its own (`start`), or, with
`watch`, a greenlet that a read watcher starts when bytes arrive and that ends once
the peer has been quiet for READER_LINGER: an idle watched session holds no greenlet
at all. A watched session whose class frames lines and overrides `on_recv_nowait` is
read in the hub itself, one read per wake-up, each line handed to `on_recv_nowait`;
the first line it declines (one that may block), and everything after it, go to a
reader greenlet as above, which gives the reading back to the hub once the socket is
empty: a chatty peer's common requests cost no greenlet switch and no timer. Output
goes through
`send`, which never blocks: it appends the bytes to a bounded queue and marks the
session dirty. Once per turn of the event loop the hub's Flusher writes each dirty
session's whole queue with one non-blocking send, so a broadcast of many messages
costs each member one system call, not one per message. Whatever the socket does not
take at once goes to a writer greenlet, spawned for that moment, which blocks on the
socket until the queue is empty and then ends.
The queue's writer is whoever holds the session's semaphore (the Flusher tries it
without waiting, the writer greenlet holds it until it is done), so exactly one
greenlet ever writes to the socket (two greenlets waiting on one gevent socket is an
error by design).

Pacing: `send` never blocks, so one burst (a group commit of many large messages)
could fill every member's queue to its bound in one turn of the loop, before anything
is written, and drop members that read as fast as they can. So while a burst is being
delivered (`Flusher.delivering`), a queue that passes its high-water mark (half the
bound) puts its session on the Flusher's backlog, and the deliverer calls
`Flusher.pace` between two messages: it waits until those sessions have written their
queues below the mark, but only while each keeps writing (a session whose socket took
nothing for PACE_STALL is not reading), for at most the pace limit per call, and for
at most the pace limit per session per PACE_WINDOW. A member that does not read is
left to its bound, which drops it; it delays the others by PACE_STALL at a time.

Replies: `send_reply` queues a reply to the peer's own request. It is never refused
and its bytes do not count against the bound (a reply may be larger than the bound:
a recovering join), so a peer is never dropped for the size of what it asked for;
the owner bounds them instead by reading the peer's next request only once the queue
is below its high-water mark (`wait_drained`), so a peer that does not read stops
being read.

A session ends once. `close()` ends it politely: it stops reading, queues a farewell
frame and lets the writer flush for at most `linger` seconds before the socket closes.
`disconnect()` ends it at once. Either way `on_disconnected` runs exactly once, when
the session stops reading and accepting frames, whichever greenlet asked and however
often. Socket errors are caught here and nowhere else, and become a disconnect.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import weakref
from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Any

import gevent
import gevent.ssl
from gevent.event import Event
from gevent.hub import Hub

from .framing import LineFramer

__all__ = ["Flusher", "Session", "SessionLimits", "send_run_to_each", "send_to_each"]

log = logging.getLogger(__name__)

RECV_SIZE = 65536
READER_LINGER = 0.5  # seconds a watched session's reader waits for more before it ends
PACE_STALL = 0.1  # seconds without a byte written: a paced session is not reading
PACE_WINDOW = 60.0  # seconds over which a session's pacing is bounded by the pace limit

_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"


@dataclass(frozen=True, kw_only=True)
class SessionLimits:
    """Per-session bounds (PROTOCOL.md sections 1 and 6, guarantee 3)."""

    max_frame: int = 65536
    max_queue_bytes: int = 4 * 1024 * 1024
    max_queue_frames: int = 10_000
    linger: float = 5.0  # how long a polite close may flush before the socket closes

    @functools.cached_property
    def high_water_bytes(self) -> int:
        """Half the byte bound: past it a session is paced for (see Session)."""
        return self.max_queue_bytes // 2

    @functools.cached_property
    def high_water_frames(self) -> int:
        """Half the frame bound."""
        return self.max_queue_frames // 2


class Session:
    """One connection. Subclass it and override the `on_*` hooks.

    A server's Listener calls `run(sock)` in the connection's own greenlet; a client's
    Connector calls `start(sock)`, which runs the reader in a new greenlet.
    """

    # Sessions of one door render a broadcast event to the same bytes (see room.py).
    door: str = "bytes"
    _reads_in_hub = False  # set per class by __init_subclass__
    _has_on_send = False  # whether on_send is overridden: set per class by __init_subclass__

    # Slots: a server holds tens of thousands of idle sessions (docs/benchmarks.md, idle).
    # Subclasses add their own attributes in a dict of their own.
    __slots__ = (
        "__dict__",
        "_accepting",
        "_backlogged",
        "_closed",
        "_direct",
        "_dirty",
        "_drained",
        "_flusher",
        "_framer",
        "_high_frames",
        "_linger",
        "_max_bytes",
        "_max_frames",
        "_on_closed",
        "_pace_since",
        "_pace_spent",
        "_queue",
        "_replies",
        "_reply_bytes",
        "_sock",
        "_state",
        "_taken_frames",
        "_watcher",
        "_writing",
        "_written_total",
        "disconnect_reason",
        "high_water_bytes",
        "last_activity",
        "last_once",
        "limits",
        "peer",
        "queued_bytes",
        "queued_frames",
        "reads_paused",
        "session_id",
    )

    def __init__(self, *, limits: SessionLimits | None = None) -> None:
        self.session_id = 0  # given by the Listener (or whoever runs the session)
        self.last_once: object = None  # the key of the last Once broadcast taken
        self.peer: Any = None
        self.limits = limits or SessionLimits()
        self.last_activity = monotonic()
        self.disconnect_reason: str | None = None
        self.queued_bytes = 0  # accepted by send() and not yet written to the socket
        self.queued_frames = 0
        self._taken_frames = 0  # of queued_frames, those taken from _queue to be written
        self._framer: LineFramer | None = None  # made by the first on_data that needs it
        self._sock: socket.socket | None = None
        self._direct = True
        self._queue: list[bytes] = []
        self._writing = False  # True while a writer greenlet owns the socket (see _flush)
        self._dirty = False  # in the Flusher's list
        self._flusher = Flusher.for_current_hub()
        self._closed: Event | None = None  # made by the first wait_closed
        self._on_closed: Callable[[], None] | None = None  # when_closed's callback(s)
        self._state = _OPEN
        # send() runs once per member per message: its checks read plain attributes.
        self._accepting = True  # open, and the queue never went past its bound
        self._max_bytes = self.limits.max_queue_bytes
        self._max_frames = self.limits.max_queue_frames
        self._linger: gevent.Greenlet | None = None
        self._watcher: Any = None  # the read watcher of `watch`
        # Pacing: past these the session is backlogged (see the module docstring).
        self.high_water_bytes = self.limits.high_water_bytes  # shared: no int per session
        self._high_frames = self.limits.high_water_frames
        self._backlogged = False  # on the Flusher's backlog
        self._pace_since = self._pace_spent = 0.0  # this PACE_WINDOW, and the time it was paced for
        self._written_total = 0  # bytes ever written: a reply's end is an offset in that stream
        # (end offset, size) of each queued reply, made when the first is queued
        self._replies: deque[tuple[int, int]] | None = None
        self._reply_bytes = 0  # the sizes in _replies, summed
        # True while the owner does not read the peer's requests (its queue is full of
        # what the peer asked for): bytes written then count as activity (idle timeout).
        self.reads_paused = False
        self._drained: Event | None = None  # made by the first wait_drained; set on progress

    # -- hooks: no-op defaults, overridden by client and server sessions ---------

    def on_connected(self) -> None:
        """The session is running: its socket is attached and the writer started."""

    def on_data(self, data: bytes) -> None:
        """Bytes arrived. Default: frame them into lines, call `on_recv` for each
        non-blank one and `on_frame_too_large` on overflow. Override only to handle
        the raw stream yourself (the benchmark counts lines without framing them)."""
        self._on_lines(self._frame(data))

    def _frame(self, data: bytes) -> list[bytes]:
        framer = self._framer
        if framer is None:
            framer = self._framer = LineFramer(self.limits.max_frame)
        lines = framer.feed(data)
        if lines:
            self.last_activity = monotonic()
        return lines

    def _on_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if self._state is not _OPEN:
                return
            if line.strip(b" \t\r"):
                self.on_recv(line)
        if self._framer is not None and self._framer.overflowed and self._state is _OPEN:
            self.on_frame_too_large()

    def on_recv(self, line: bytes) -> None:
        """A complete, non-blank line arrived (LF and one CR before it removed)."""

    def on_recv_nowait(self, line: bytes) -> bool:
        """For a watched session that frames lines (does not override `on_data`):
        called in the hub, before `on_recv`, for each line. Handle it without blocking
        and return True, or do nothing and return False: that line and every later
        one then go to `on_recv` in a reader greenlet, in order. Default: False.

        A chatty peer's common requests then cost no greenlet switch at all."""
        return False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Read in the hub (see on_recv_nowait) only when this class frames lines and
        # may handle some of them there.
        cls._reads_in_hub = (cls.on_data is Session.on_data
                             and cls.on_recv_nowait is not Session.on_recv_nowait)
        cls._has_on_send = cls.on_send is not Session.on_send

    def render(self, event: Any) -> bytes:
        """The bytes of a broadcast `event` for this session's door: every session of
        a door must render an event alike. Default: the event is bytes already."""
        return event

    def on_send(self, nbytes: int) -> None:
        """`nbytes` bytes were written to the socket. May run in the hub: must not block.
        Override it in a subclass (the engine checks the class once, not the instance)."""

    def on_disconnected(self, reason: str) -> None:
        """The session ended for `reason`; called exactly once."""

    def on_eof(self) -> None:
        """The peer closed its side (EOF, maybe a half-close). Default: flush what it
        asked for, then close."""
        self.close("eof")

    def on_frame_too_large(self) -> None:
        """The peer sent a line longer than max_frame. Default: disconnect."""
        self.disconnect("frame_too_large")

    def slow_consumer_farewell(self) -> bytes | None:
        """The frame to try to write when the session is dropped as a slow consumer."""
        return None

    # -- lifecycle ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True until the session starts closing."""
        return self._state is _OPEN

    def run(self, sock: socket.socket) -> None:
        """Run the session in the calling greenlet until it has fully closed."""
        self._attach(sock)
        self._read_loop()
        self.wait_closed()

    def start(self, sock: socket.socket) -> None:
        """Run the session in greenlets of its own and return at once."""
        self._attach(sock)
        gevent.spawn(self._read_loop)

    def watch(self, sock: socket.socket) -> None:
        """Run the session with no greenlet at all while it is idle, and return at once.

        A read watcher wakes a short-lived greenlet when bytes arrive; it reads until
        the socket is empty, handing each chunk to `on_data`, then ends (or, for a
        class with `on_recv_nowait`, the hub reads, see the module docstring). A plain socket
        only: TLS keeps decrypted bytes inside the SSL object, where no watcher sees
        them, so it needs `run` or `start`.
        """
        self._attach(sock)
        # gevent's socket has a read watcher of its own, which only its recv uses, and
        # a watched session reads with os.read: sharing it saves a watcher (129 bytes)
        # per idle session. The socket closes it; _close_socket only stops it.
        self._watcher = getattr(sock, "_read_event", None) or gevent.get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(self._readable)

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the hub: it must not block) once the socket is closed.
        (A callable, not an Event per session: every session has one, the Listener's.)"""
        if self._state is _CLOSED:
            gevent.get_hub().loop.run_callback(callback)
            return
        earlier = self._on_closed
        if earlier is None:
            self._on_closed = callback
        else:
            def both() -> None:
                earlier()
                callback()
            self._on_closed = both

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        # TLS cannot take a non-blocking partial write from the Flusher: always use a
        # writer. (gevent's SSLSocket is ssl.SSLSocket only once ssl is monkey-patched.)
        self._direct = not isinstance(sock, (ssl.SSLSocket, gevent.ssl.SSLSocket))
        self.last_activity = monotonic()
        self.on_connected()
        if self._queue:
            self._schedule_flush()  # sent before the socket was attached

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the socket is closed; True if it is."""
        if self._state is _CLOSED:
            return True
        if self._closed is None:
            self._closed = Event()
        return self._closed.wait(timeout)

    def close(self, reason: str, farewell: bytes | None = None, *, discard: bool = False,
              linger: float | None = None) -> None:
        """End the session politely: stop reading, flush (then `farewell`), close.

        With `discard`, frames queued but not yet being written are dropped first.
        The flush may take at most `linger` seconds (default: the session's limit).
        """
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        self._accepting = False
        self._wake_drain_waiters()  # nobody waits for a closing session
        self.disconnect_reason = reason
        if discard:
            self._replies = None
            self._reply_bytes = 0
            self.queued_bytes -= sum(map(len, self._queue))
            self.queued_frames = self._taken_frames
            self._queue = []
        if farewell is not None:
            self._queue.append(farewell)
            self.queued_bytes += len(farewell)
            self.queued_frames += 1
        self._schedule_flush()
        wait = self.limits.linger if linger is None else linger
        self._linger = gevent.spawn_later(wait, self._close_socket)
        self._notify_disconnected(reason)

    def disconnect(self, reason: str = "closed") -> None:
        """End the session now, dropping anything unsent. Safe to call twice."""
        if self._state is _OPEN:
            self._state = _CLOSING
            self._accepting = False
            self._wake_drain_waiters()
            self.disconnect_reason = reason
            self._notify_disconnected(reason)
        self._close_socket()

    def _notify_disconnected(self, reason: str) -> None:
        try:
            self.on_disconnected(reason)
        except Exception:
            log.exception("session %s: on_disconnected failed", self.session_id)

    def _close_socket(self) -> None:
        if self._state is _CLOSED:
            return
        self._state = _CLOSED
        self._accepting = False
        current = gevent.getcurrent()
        if self._linger is not None and self._linger is not current:
            self._linger.kill(block=False)
        self._queue = []
        self._replies = None
        self._reply_bytes = 0
        self.queued_bytes = self.queued_frames = 0
        self._wake_drain_waiters()
        if self._watcher is not None:
            self._watcher.stop()  # before the fd is closed, and maybe reused
            if self._watcher is not getattr(self._sock, "_read_event", None):
                self._watcher.close()
            self._watcher = None
        if self._sock is not None:
            try:
                self._sock.close()  # a reader or writer waiting on it gets OSError
            except OSError:
                pass
        if self._closed is not None:
            self._closed.set()
        if self._on_closed is not None:
            gevent.get_hub().loop.run_callback(self._on_closed)
            self._on_closed = None

    # -- sending ------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue `data` (one or more whole frames) for the writer; never blocks.

        Returns False when the session is closing or the data was refused because
        the queue is past its bound, which drops the session as a slow consumer.
        """
        if not self._accepting:
            return False
        if self.queued_bytes >= self.high_water_bytes or self.queued_frames >= self._high_frames:
            return self._send_past_high_water(data)
        # The common case, once per member per message: as few steps as possible.
        self._queue.append(data)
        self.queued_bytes += len(data)
        self.queued_frames += 1
        if not self._dirty:  # _schedule_flush, inlined
            self._dirty = True
            self._flusher.add(self)
        return True

    def _send_past_high_water(self, data: bytes) -> bool:
        # PROTOCOL.md 7, queue bound: accept while the queue holds fewer than the
        # limits *before* this frame (replies not counted).
        if self.counted_bytes() >= self._max_bytes or self.queued_frames >= self._max_frames:
            self._accepting = False
            # Close in a greenlet of its own, not here: the caller may be iterating
            # over a room's members, and closing changes rooms.
            gevent.spawn(self._drop_slow_consumer)
            return False
        self._enqueue(data)
        # Past half the bound while a burst is delivered: the deliverer paces for it.
        if (self.counted_bytes() >= self.high_water_bytes or self.queued_frames >= self._high_frames) \
                and self._flusher.delivering and not self._backlogged:
            self._backlogged = True
            self._flusher.backlog.append(self)
        return True

    def send_reply(self, data: bytes) -> bool:
        """Queue a reply to the peer's own request: like `send`, but never refused
        for the bound and not counted against it (see the module docstring)."""
        if not self._accepting:
            return False
        self._enqueue(data)
        if self._replies is None:
            self._replies = deque()
        self._replies.append((self._written_total + self.queued_bytes, len(data)))
        self._reply_bytes += len(data)
        return True

    def counted_bytes(self) -> int:
        """Queued bytes that count against the bound: all but unwritten replies."""
        replies = self._replies  # holds only replies not yet written whole (_written)
        if not replies:
            return self.queued_bytes
        end, size = replies[0]  # only the oldest reply can be partly written
        return self.queued_bytes - self._reply_bytes + max(0, self._written_total - (end - size))

    def wait_drained(self, timeout: float | None = None, *, replies: bool = True) -> bool:
        """Block the calling greenlet until the queue is below its high-water mark
        (counting replies, or not) or the session is closing; False if `timeout`
        passed first."""
        mark = self.high_water_bytes
        with gevent.Timeout(timeout, False):  # type: ignore[arg-type]  # False: silent
            while self._accepting and (
                    self.queued_frames >= self._high_frames
                    or (self.queued_bytes if replies else self.counted_bytes()) >= mark):
                if self._drained is None:
                    self._drained = Event()
                self._drained.clear()
                self._drained.wait()
            return True
        return False

    def _pace(self, deadline: float, limit: float) -> None:
        """Wait while this session writes its queue below the high-water mark, until
        `deadline`, within its pacing budget (`limit` per PACE_WINDOW), and only while
        its socket keeps taking bytes."""
        now = start = monotonic()
        if now - self._pace_since >= PACE_WINDOW:
            self._pace_since, self._pace_spent = now, 0.0
        until = min(deadline, now + limit - self._pace_spent)
        while now < until:
            progress = self._written_total
            if self.wait_drained(min(PACE_STALL, until - now), replies=False):
                break
            if self._written_total == progress:
                log.debug("session %s: not reading; not paced for", self.session_id)
                break
            now = monotonic()
        self._pace_spent += monotonic() - start

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self.queued_bytes += len(data)
        self.queued_frames += 1
        self._schedule_flush()

    def _wake_drain_waiters(self) -> None:
        if self._drained is not None:
            self._drained.set()

    def _schedule_flush(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._flusher.add(self)

    def _drop_slow_consumer(self) -> None:
        # PROTOCOL.md 6, guarantee 3: discard the queue; the farewell follows only
        # what is already being written, so it never splits a frame.
        self.close("slow_consumer", self.slow_consumer_farewell(), discard=True)

    def _take_batch(self) -> tuple[bytes, int]:
        """The queue as one bytes object, and how many frames it holds (an item of
        the queue may hold several: a room's run, see room.py)."""
        batch, self._queue = self._queue, []
        frames = self.queued_frames - self._taken_frames
        self._taken_frames = self.queued_frames
        return (batch[0] if len(batch) == 1 else b"".join(batch)), frames

    def _flush(self) -> None:
        """Called by the Flusher in the hub: write the queue if no writer is at it,
        without blocking; leave the rest to a writer greenlet. It runs once per member
        per delivery, so _take_batch is inlined (its call cost 0.1 us of a delivery's 3.3,
        bench/micro/flush.py) and the send goes to the socket's own non-blocking socket
        (gevent's wrapper would only re-raise BlockingIOError)."""
        self._dirty = False
        sock = self._sock
        if sock is None or self._state is _CLOSED or self._writing:
            return  # closed, or the writer greenlet owns the socket and will see the queue
        queue = self._queue
        if not queue:
            self._finish_if_closing()
            return
        self._queue = []
        frames = self.queued_frames - self._taken_frames
        self._taken_frames = self.queued_frames
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        sent = 0
        if self._direct:
            try:
                sent = sock._sock.send(data)  # type: ignore[attr-defined]  # never waits
            except BlockingIOError:
                pass
            except OSError as exc:
                gevent.spawn(self._lost, exc)  # hooks run in a greenlet, not in the hub
                return
        if sent == len(data):
            self._written(sent, frames)
            if self._state is _CLOSING:
                self._finish_if_closing()
        else:
            # The socket is full: a writer greenlet, holding the semaphore, finishes.
            self._writing = True
            if sent:
                self._written(sent, 0)
            gevent.spawn(self._write_loop, memoryview(data)[sent:], frames)

    def _written(self, nbytes: int, frames: int) -> None:
        total = self._written_total = self._written_total + nbytes
        queued = self.queued_bytes - nbytes
        self.queued_bytes = queued if queued > 0 else 0
        replies = self._replies
        if replies is not None:
            while replies and replies[0][0] <= total:  # written whole: forget it
                self._reply_bytes -= replies.popleft()[1]
            if not replies:
                self._replies = None  # idle sessions keep no deque
        if frames:
            queued = self.queued_frames - frames
            self.queued_frames = queued if queued > 0 else 0
            taken = self._taken_frames - frames
            self._taken_frames = taken if taken > 0 else 0
        if self._drained is not None:
            self._drained.set()  # waiters check their own mark
        if self.reads_paused:
            self.last_activity = monotonic()
        if self._has_on_send:
            try:
                self.on_send(nbytes)
            except Exception:
                log.exception("session %s: on_send failed", self.session_id)
                gevent.spawn(self.disconnect, "error")

    def _finish_if_closing(self) -> None:
        if self._state is _CLOSING and not self._queue:
            self._close_socket()  # closing, and everything is flushed

    def _write_loop(self, pending: memoryview | bytes, frames: int) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                view = memoryview(pending)
                while view:  # send, not sendall: progress is seen as it happens (pacing)
                    try:
                        sent = sock.send(view)
                    except OSError as exc:
                        self._lost(exc)
                        return
                    view = view[sent:]
                    self._written(sent, 0 if view else frames)
                if not self._queue or self._state is _CLOSED:
                    break
                pending, frames = self._take_batch()
        finally:
            self._writing = False
        self._finish_if_closing()

    # -- receiving ----------------------------------------------------------------

    def _readable(self) -> None:
        # In the hub: read here if the lines may be handled here, else hand the reading
        # to a greenlet, which may block in a hook.
        if self._reads_in_hub and self._state is _OPEN:
            self._read_in_hub()
            return
        if self._watcher is not None:
            self._watcher.stop()
        gevent.spawn(self._read_ready)

    def _read_in_hub(self) -> None:
        """One read, in the hub; its lines go to `on_recv_nowait` until one is declined:
        from there on a reader greenlet takes over (and so for an EOF or an error)."""
        try:
            data = os.read(self._watcher.fd, RECV_SIZE)  # the watcher's: no call into gevent
        except BlockingIOError:
            return  # nothing after all: the watcher stays on
        except OSError as exc:
            self._in_reader(self._lost, exc)
            return
        if not data:
            self._in_reader(self.on_eof)
            return
        lines = self._frame(data)
        for index, line in enumerate(lines):
            if self._state is not _OPEN:
                return
            if not line.strip(b" \t\r"):
                continue
            try:
                handled = self.on_recv_nowait(line)
            except Exception:
                log.exception("session %s: a receive hook failed", self.session_id)
                self._in_reader(self.disconnect, "error")  # its hooks may block: not in the hub
                return
            if not handled:
                self._in_reader(self._on_lines, lines[index:], read_on=True)
                return
        framer = self._framer
        if framer is not None and framer.overflowed and self._state is _OPEN:
            self._in_reader(self.on_frame_too_large, read_on=True)  # closing: read, discard

    def _in_reader(self, hook: Callable[..., None], *args: Any, read_on: bool = False) -> None:
        """From the hub: stop reading here and run `hook(*args)` in a reader greenlet,
        which then reads on (`read_on`) or ends."""
        if self._watcher is not None:
            self._watcher.stop()

        def reader() -> None:
            try:
                hook(*args)
            except Exception:
                self._hook_failed()
                return
            if read_on:
                self._read_ready()
        gevent.spawn(reader)

    def _hook_failed(self) -> None:
        """A receive hook raised (a bug): log it and end the session."""
        log.exception("session %s: a receive hook failed", self.session_id)
        self.disconnect("error")

    def _read_ready(self) -> None:
        assert self._sock is not None
        fd = self._sock.fileno()
        try:
            while self._state is not _CLOSED:
                try:
                    data = os.read(fd, RECV_SIZE)  # the fd is non-blocking: gevent made it so
                except BlockingIOError:
                    if self._watcher is None or self._state is _CLOSED:
                        return
                    if self._reads_in_hub and self._state is _OPEN:
                        self._watcher.start(self._readable)  # the hub reads what comes next
                        return
                    # A chatty peer keeps its reader for a moment; an idle one leaves none.
                    with gevent.Timeout(READER_LINGER, False):  # type: ignore[arg-type]  # False: silent
                        gevent.get_hub().wait(self._watcher)
                        continue
                    if self._watcher is not None and self._state is not _CLOSED:
                        self._watcher.start(self._readable)
                    return
                except OSError as exc:
                    self._lost(exc)
                    return
                if not data:
                    self.on_eof()
                    return
                if self._state is _OPEN:
                    self.on_data(data)  # closing: read on, discarding, until the socket closes
        except Exception:
            self._hook_failed()

    def _read_loop(self) -> None:
        try:
            self._read_lines()
        except Exception:
            self._hook_failed()

    def _read_lines(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except OSError as exc:
                self._lost(exc)
                return
            if not data:
                break
            if self._state is not _OPEN:
                continue  # closing: no more requests; read on until the socket closes
            self.on_data(data)
        self.on_eof()

    def _lost(self, exc: OSError) -> None:
        if self._state is _CLOSED:
            return  # our own close woke this greenlet
        reason = "reset" if isinstance(exc, ConnectionResetError) else "error"
        log.debug("session %s: %s: %s", self.session_id, reason, exc)
        self.disconnect(reason)


def send_to_each(members: Iterable[Session], data: bytes, exclude: Session | None) -> int:
    """`member.send(data)` for each member but `exclude`; how many took it. A broadcast
    runs this once per member per message, so send's common case (open, below the
    high-water marks) is inlined here: no call per member, the same effect."""
    size = len(data)
    delivered = 0
    for member in members:
        if member is exclude:
            continue
        if member._accepting and member.queued_bytes < member.high_water_bytes \
                and member.queued_frames < member._high_frames:
            member._queue.append(data)
            member.queued_bytes += size
            member.queued_frames += 1
            if not member._dirty:
                member._dirty = True
                member._flusher.add(member)
            delivered += 1
        elif member.send(data):  # closing, or past a mark: send decides
            delivered += 1
    return delivered


def send_run_to_each(members: Iterable[Session], frames: list[bytes], blob: bytes,
                     apart: Container[Session], send_apart: Callable[[Session], int]) -> int:
    """Queue `frames` (`blob` is them joined) to each member, in the members' order: as
    one item counted as its frames when the queue stays below both high-water marks
    with it, else frame by frame through `send`, bounded and paced as single
    broadcasts are; a member in `apart` gets `send_apart(member)` instead. How many
    frames the members took."""
    size, count = len(blob), len(frames)
    delivered = 0
    for member in members:
        if member in apart:
            delivered += send_apart(member)
        elif member._accepting and member.queued_bytes + size < member.high_water_bytes \
                and member.queued_frames + count < member._high_frames:
            member._queue.append(blob)  # send's common case, for `count` frames
            member.queued_bytes += size
            member.queued_frames += count
            if not member._dirty:
                member._dirty = True
                member._flusher.add(member)
            delivered += count
        else:  # closing, or near a mark
            for frame in frames:
                if member.send(frame):
                    delivered += 1
    return delivered


class Flusher:
    """Writes the queue of every session that has output, once per event-loop turn.

    `send` only queues; the first send of a turn schedules one callback, which then
    writes each dirty session's whole queue at once. One Flusher per hub.
    """

    _by_hub: weakref.WeakKeyDictionary[Hub, Flusher] = weakref.WeakKeyDictionary()

    def __init__(self, hub: Hub) -> None:
        self._loop = hub.loop
        self._dirty: list[Session] = []
        self._scheduled = False
        # Set by whoever delivers a burst while it queues a message: only then does a
        # session passing its high-water mark go on the backlog (a whisper never paces).
        self.delivering = False
        self.backlog: list[Session] = []  # sessions past their high-water mark meanwhile

    def pace(self, limit: float) -> None:
        """Wait until the backlogged sessions have written their queues below their
        high-water marks: at most `limit` seconds in all, and for each only while its
        socket keeps taking bytes and within its budget (see the module docstring).
        Called between the messages of a burst, so members that read are never pushed
        to their bound by it, and members that do not are left to it. While it waits,
        nothing is being delivered (what others send meanwhile backlogs no one)."""
        if not self.backlog:
            return
        deadline = monotonic() + limit
        backlog, self.backlog = self.backlog, []
        delivering, self.delivering = self.delivering, False
        try:
            for session in backlog:
                session._backlogged = False
                session._pace(deadline, limit)
        finally:
            self.delivering = delivering

    @classmethod
    def for_current_hub(cls) -> Flusher:
        """The Flusher of the calling thread's hub."""
        hub = gevent.get_hub()
        flusher = cls._by_hub.get(hub)
        if flusher is None:
            flusher = cls._by_hub[hub] = cls(hub)
        return flusher

    def add(self, session: Session) -> None:
        """Write `session`'s queue at the end of this turn of the loop."""
        self._dirty.append(session)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            try:
                session._flush()
            except Exception:  # a bug must not stop the other sessions' output
                log.exception("session %s: flush failed", session.session_id)
