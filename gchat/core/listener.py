"""Listener: a thin adapter on gevent's StreamServer that turns connections into sessions.

Strategy: StreamServer accepts and spawns one greenlet per connection; in it the
Listener numbers the connection, builds a session with the factory it was given, and
runs the session there, so a session lives exactly as long as its handler greenlet
(StreamServer closes the socket when the handler returns). Graceful stop follows
gevent's own: stop accepting, let each session say goodbye and flush, wait up to a
grace period, then close whatever is left.

Past `max_sessions` a plain port answers `reject` and closes; a TLS port just closes,
without a handshake: `reject` in clear text would reach a TLS client as a protocol
error, and a handshake per refused connection (a private-key operation, a socket held
up to the handshake timeout) is what a flood past the limit must not be able to buy.
When `accept()` itself fails for want of descriptors or memory (EMFILE, ENFILE, ...),
the listener pauses accepting with a growing delay and logs one line, not a traceback.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from ..errors import ConfigError
from ..logthrottle import LogThrottle
from .connector import require_gevent_ssl
from .session import Session

__all__ = ["Listener"]

log = logging.getLogger(__name__)


class Listener:
    """Accept connections on `host:port` and run a session from `factory` for each.

    `session_ids` may be shared between listeners (say, a plain and a TLS port) so
    that ids stay unique across them. Beyond `max_sessions` live sessions a new
    connection is sent `reject` (if given, best effort; never on a TLS port) and closed.
    """

    def __init__(self, host: str, port: int, factory: Callable[[], Session], *,
                 ssl_context: ssl.SSLContext | None = None,
                 session_ids: Iterator[int] | None = None,
                 max_sessions: int | None = None,
                 reject: bytes | None = None,
                 handshake_timeout: float = 10.0,
                 backlog: int = 1024) -> None:
        self.factory = factory
        self.sessions: dict[int, Session] = {}
        self.max_sessions = max_sessions
        self._no_sessions = Event()
        self._no_sessions.set()
        self._handshaking = 0  # TLS connections not yet sessions; they count against the limit
        self._log = LogThrottle(log)  # a flood must not flood the log too
        self._reject = reject
        self._ids = session_ids if session_ids is not None else itertools.count(1)
        self._host, self._port = host, port
        self._ssl_context = require_gevent_ssl(ssl_context)
        self._handshake_timeout = handshake_timeout
        self._server = _Server((host, port), self._handle, backlog=backlog, log=self._log)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is real even when 0 was asked for."""
        host, port = self._server.server_host, self._server.server_port
        if host is None or port is None:
            raise RuntimeError("the listener has no address yet")
        return host, port

    def start(self) -> None:
        """Bind and start accepting in the background; ConfigError if it cannot bind."""
        try:
            self._server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}") from exc

    def stop_accepting(self) -> None:
        """Close the listening socket; live sessions go on."""
        self._server.close()

    def stop(self, grace: float = 5.0, farewell: bytes | None = None,
             reason: str = "shutdown") -> None:
        """Stop accepting, close every session politely with `farewell`, wait at most
        `grace` seconds for them to flush, then close whatever is left."""
        self.stop_accepting()
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(reason, farewell, linger=grace)
        deadline = monotonic() + grace
        for session in sessions:
            session.wait_closed(max(0.0, deadline - monotonic()))
        for session in sessions:
            session.disconnect(reason)
        self._no_sessions.wait(1.0)  # their handler greenlets return
        self._server.stop()

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        live = len(self.sessions) + self._handshaking
        if self.max_sessions is not None and live >= self.max_sessions:
            self._refuse(sock, address)
            return
        if self._ssl_context is not None:
            secure = self._handshake(sock, address)
            if secure is None:
                return
            sock = secure
        session = self.factory()
        session.session_id = next(self._ids)
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            # One string per client address, not one per connection (idle memory).
            address = (sys.intern(address[0]), *address[1:])
        session.peer = address
        self.sessions[session.session_id] = session
        self._no_sessions.clear()
        peer = _format_peer(address)
        log.info("session %d connected from %s", session.session_id, peer)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self._ssl_context is None:
            # No greenlet while idle: the session keeps the socket after this returns.
            self._server.adopted.add(sock)
            session.when_closed(lambda: self._forget(session, peer))
            session.watch(sock)
            return
        try:
            session.run(sock)  # TLS: the session's reader is this greenlet
        except Exception:
            log.exception("session %d failed", session.session_id)
            session.disconnect("error")
        finally:
            self._forget(session, peer)

    def _forget(self, session: Session, peer: str) -> None:
        if self.sessions.pop(session.session_id, None) is None:
            return
        if not self.sessions:
            self._no_sessions.set()
        log.info("session %d disconnected from %s (%s)", session.session_id, peer,
                 session.disconnect_reason)

    def _handshake(self, sock: socket.socket, address: tuple) -> socket.socket | None:
        """TLS server handshake in the connection's greenlet, under a timeout, so a
        peer that never finishes it holds nothing for long."""
        assert self._ssl_context is not None
        self._handshaking += 1
        try:
            with gevent.Timeout(self._handshake_timeout, _HandshakeTimeout):
                return self._ssl_context.wrap_socket(sock, server_side=True)
        except (_HandshakeTimeout, ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", _format_peer(address),
                     "timed out" if isinstance(exc, _HandshakeTimeout) else exc)
            return None
        finally:
            self._handshaking -= 1

    def _refuse(self, sock: socket.socket, address: tuple) -> None:
        """Past the limit: `reject` on a plain port, then StreamServer closes the socket.
        A TLS port only closes (see the module's strategy): the client sees the
        connection end, and nothing the refusal costs outlives this call."""
        self._log.warning("refused", "refused a connection from %s: %d sessions already",
                          _format_peer(address), len(self.sessions))
        if self._reject and self._ssl_context is None:
            try:
                sock.settimeout(0)
                sock.send(self._reject)
            except OSError:
                pass


# accept() failures that say the process or the system is short of something: waiting
# helps, and retrying at once would spin on a listening socket that stays readable.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Server(StreamServer):
    """A StreamServer that leaves open the sockets a session has adopted (it closes a
    connection's socket when its handler returns, and a watched session outlives it),
    and that rides out a shortage of descriptors quietly."""

    def __init__(self, *args: Any, log: LogThrottle, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adopted: set[socket.socket] = set()
        self._log = log
        self._pause = self.min_delay
        self._resume: Any = None  # the loop timer that resumes accepting after a pause

    def do_read(self) -> Any:
        """Accept one connection. StreamServer hands an accept error to the hub, which
        prints a traceback for each (gevent baseserver `_do_read`); a shortage is
        instead logged through the throttle and accepting pauses, the pause doubling up
        to `max_delay` while the shortage lasts, as gevent's own backoff does."""
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRORS:
                raise
            self._log.error("accept", "cannot accept connections on port %s: %s; "
                            "pausing %g s", self.server_port, exc.strerror or exc, self._pause)
            self.stop_accepting()
            self._resume = self.loop.timer(self._pause)
            self._resume.start(self._end_pause)
            self._pause = min(self.max_delay, self._pause * 2)
            return None  # StreamServer's loop then returns until the timer resumes it
        if accepted:
            self._pause = self.min_delay
        return accepted

    def _end_pause(self) -> None:
        # The spent timer is closed by the next stop_accepting, as gevent does its own.
        if self.started:  # not if the server was closed meanwhile
            self.start_accepting()

    def stop_accepting(self) -> None:
        if self._resume is not None:
            self._resume.stop()
            self._resume.close()
            self._resume = None
        super().stop_accepting()

    def do_close(self, sock: socket.socket, *args: Any) -> None:
        if sock in self.adopted:
            self.adopted.discard(sock)
            return
        super().do_close(sock, *args)


class _HandshakeTimeout(Exception):
    pass


def _format_peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
