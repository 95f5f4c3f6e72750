"""Listener: a thin adapter on gevent's StreamServer that turns connections into sessions.

Strategy: StreamServer accepts and spawns one greenlet per connection; in it the
Listener numbers the connection, builds a session with the factory it was given, and
runs the session there, so a session lives exactly as long as its handler greenlet
(StreamServer closes the socket when the handler returns). Graceful stop follows
gevent's own: stop accepting, let each session say goodbye and flush, wait up to a
grace period, then close whatever is left.
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from ..errors import ConfigError
from .connector import require_gevent_ssl
from .session import Session

__all__ = ["Listener"]

log = logging.getLogger(__name__)


class Listener:
    """Accept connections on `host:port` and run a session from `factory` for each.

    `session_ids` may be shared between listeners (say, a plain and a TLS port) so
    that ids stay unique across them. Beyond `max_sessions` live sessions a new
    connection is sent `reject` (if given, best effort) and closed.
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
        self._refused, self._refused_logged = 0, -10.0
        self._reject = reject
        self._ids = session_ids if session_ids is not None else itertools.count(1)
        self._host, self._port = host, port
        self._ssl_context = require_gevent_ssl(ssl_context)
        self._handshake_timeout = handshake_timeout
        self._server = _Server((host, port), self._handle, backlog=backlog)

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
        self._refused += 1
        now = monotonic()
        if now - self._refused_logged >= 10.0:  # a flood must not flood the log too
            log.warning("refused %d connection(s), the last from %s: %d sessions already",
                        self._refused, _format_peer(address), len(self.sessions))
            self._refused, self._refused_logged = 0, now
        if self._reject:
            try:
                sock.settimeout(0)
                sock.send(self._reject)
            except OSError:
                pass


class _Server(StreamServer):
    """A StreamServer that leaves open the sockets a session has adopted: it closes a
    connection's socket when its handler returns, and a watched session outlives it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adopted: set[socket.socket] = set()

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
