"""Session: one connection, a reader and a single writer, and four hooks.

Strategy: the reader loop owns the socket's input. It feeds received bytes to a
LineFramer and calls `on_recv` once per non-blank line, in order. Output goes through
`send`, which never blocks: it appends the bytes to a bounded queue guarded by a
semaphore and wakes the writer greenlet, the only greenlet that ever writes to the
socket (two greenlets waiting on one gevent socket is an error by design). The writer
joins everything queued into one `sendall`.

A session ends once. `close()` ends it politely: it stops reading, queues a farewell
frame and lets the writer flush for at most `linger` seconds before the socket closes.
`disconnect()` ends it at once. Either way `on_disconnected` runs exactly once, when
the session stops reading and accepting frames, whichever greenlet asked and however
often. Socket errors are caught here and nowhere else, and become a disconnect.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from time import monotonic
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from .framing import LineFramer

__all__ = ["Session", "SessionLimits"]

log = logging.getLogger(__name__)

RECV_SIZE = 65536

_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"


@dataclass(frozen=True, kw_only=True)
class SessionLimits:
    """Per-session bounds (PROTOCOL.md sections 1 and 6, guarantee 3)."""

    max_frame: int = 65536
    max_queue_bytes: int = 4 * 1024 * 1024
    max_queue_frames: int = 10_000
    linger: float = 5.0  # how long a polite close may flush before the socket closes


class Session:
    """One connection. Subclass it and override the `on_*` hooks.

    A server's Listener calls `run(sock)` in the connection's own greenlet; a client's
    Connector calls `start(sock)`, which runs the reader in a new greenlet.
    """

    session_id: int = 0
    peer: Any = None

    def __init__(self, *, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self.last_activity = monotonic()
        self.disconnect_reason: str | None = None
        self.queued_bytes = 0  # accepted by send() and not yet written to the socket
        self.queued_frames = 0
        self._framer = LineFramer(self.limits.max_frame)
        self._sock: socket.socket | None = None
        self._queue: list[bytes] = []
        self._queue_lock = BoundedSemaphore(1)
        self._wakeup = Event()
        self._closed = Event()
        self._state = _OPEN
        self._overflowing = False
        self._writer: gevent.Greenlet | None = None
        self._linger: gevent.Greenlet | None = None

    # -- hooks: no-op defaults, overridden by client and server sessions ---------

    def on_connected(self) -> None:
        """The session is running: its socket is attached and the writer started."""

    def on_data(self, data: bytes) -> None:
        """Bytes arrived. Default: frame them into lines, call `on_recv` for each
        non-blank one and `on_frame_too_large` on overflow. Override only to handle
        the raw stream yourself (the benchmark counts lines without framing them)."""
        lines = self._framer.feed(data)
        if lines:
            self.last_activity = monotonic()
        for line in lines:
            if self._state is not _OPEN:
                return
            if line.strip(b" \t\r"):
                self.on_recv(line)
        if self._framer.overflowed and self._state is _OPEN:
            self.on_frame_too_large()

    def on_recv(self, line: bytes) -> None:
        """A complete, non-blank line arrived (LF and one CR before it removed)."""

    def on_send(self, nbytes: int) -> None:
        """`nbytes` bytes were written to the socket."""

    def on_disconnected(self, reason: str) -> None:
        """The session ended for `reason`; called exactly once."""

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
        self._closed.wait()

    def start(self, sock: socket.socket) -> None:
        """Run the session in greenlets of its own and return at once."""
        self._attach(sock)
        gevent.spawn(self._read_loop)

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self.last_activity = monotonic()
        self._writer = gevent.spawn(self._write_loop)
        self.on_connected()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the socket is closed; True if it is."""
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
        self.disconnect_reason = reason
        with self._queue_lock:
            if discard:
                self.queued_bytes -= sum(map(len, self._queue))
                self.queued_frames -= len(self._queue)
                self._queue.clear()
            if farewell is not None:
                self._queue.append(farewell)
                self.queued_bytes += len(farewell)
                self.queued_frames += 1
        self._wakeup.set()
        wait = self.limits.linger if linger is None else linger
        self._linger = gevent.spawn_later(wait, self._close_socket)
        self._notify_disconnected(reason)

    def disconnect(self, reason: str = "closed") -> None:
        """End the session now, dropping anything unsent. Safe to call twice."""
        if self._state is _OPEN:
            self._state = _CLOSING
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
        current = gevent.getcurrent()
        if self._linger is not None and self._linger is not current:
            self._linger.kill(block=False)
        with self._queue_lock:
            self._queue.clear()
            self.queued_bytes = self.queued_frames = 0
        if self._sock is not None:
            try:
                self._sock.close()  # a reader or writer waiting on it gets OSError
            except OSError:
                pass
        self._wakeup.set()  # a writer waiting for frames sees the end
        self._closed.set()

    # -- sending ------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue `data` (one or more whole frames) for the writer; never blocks.

        Returns False when the session is closing or the data was refused because
        the queue is past its bound, which drops the session as a slow consumer.
        """
        if self._state is not _OPEN or self._overflowing:
            return False
        limits = self.limits
        with self._queue_lock:
            # PROTOCOL.md 7, queue bound: accept while the queue holds fewer than
            # the limits *before* this frame, so one large reply always fits.
            if (self.queued_bytes >= limits.max_queue_bytes
                    or self.queued_frames >= limits.max_queue_frames):
                self._overflowing = True
            else:
                self._queue.append(data)
                self.queued_bytes += len(data)
                self.queued_frames += 1
        if self._overflowing:
            # Close in a greenlet of its own, not here: the caller may be iterating
            # over a room's members, and closing changes rooms.
            gevent.spawn(self._drop_slow_consumer)
            return False
        self._wakeup.set()
        return True

    def _drop_slow_consumer(self) -> None:
        # PROTOCOL.md 6, guarantee 3: discard the queue; the farewell follows only
        # what is already being written, so it never splits a frame.
        self.close("slow_consumer", self.slow_consumer_farewell(), discard=True)

    def _write_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            self._wakeup.wait()
            with self._queue_lock:
                batch = self._queue
                self._queue = []
                self._wakeup.clear()
            if batch:
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                try:
                    sock.sendall(data)
                except OSError as exc:
                    self._lost(exc)
                    return
                with self._queue_lock:
                    self.queued_bytes = max(0, self.queued_bytes - len(data))
                    self.queued_frames = max(0, self.queued_frames - len(batch))
                try:
                    self.on_send(len(data))
                except Exception:
                    log.exception("session %s: on_send failed", self.session_id)
                    self.disconnect("error")
                    return
            if self._state is not _OPEN and not self._queue:
                break  # closing, and everything is flushed
        self._close_socket()

    # -- receiving ----------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._read_lines()
        except Exception:
            log.exception("session %s: a receive hook failed", self.session_id)
            self.disconnect("error")

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
        # The peer closed its side: flush what it asked for, then close.
        self.close("eof")

    def _lost(self, exc: OSError) -> None:
        if self._state is _CLOSED:
            return  # our own close woke this greenlet
        reason = "reset" if isinstance(exc, ConnectionResetError) else "error"
        log.debug("session %s: %s: %s", self.session_id, reason, exc)
        self.disconnect(reason)
