"""Connector: open a client connection in a greenlet and hand back a running session.

Strategy: resolve, connect and (optionally) complete the TLS handshake under one
gevent.Timeout, so a dead host costs at most `timeout` seconds; translate every
failure into a ConnectError that says where and why, then start the session.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl

from ..errors import ConnectError
from .session import Session

__all__ = ["Connector", "require_gevent_ssl"]


class Connector:
    """Connect to `host:port` and run a session built by `factory` on the connection."""

    def __init__(self, host: str, port: int, factory: Callable[[], Session], *,
                 timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.factory = factory
        self.timeout = timeout
        self.ssl_context = require_gevent_ssl(ssl_context)

    def connect(self) -> Session:
        """Connect now (blocking this greenlet only); return the started session."""
        where = f"{self.host}:{self.port}"
        sock = None
        try:
            with gevent.Timeout(self.timeout, ConnectError(f"{where}: timed out after {self.timeout:g} s")):
                sock = _open_connection(self.host, self.port)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except ConnectError:
            _close_quietly(sock)
            raise
        except ssl.SSLError as exc:
            _close_quietly(sock)
            raise ConnectError(f"{where}: TLS handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            _close_quietly(sock)
            raise ConnectError(f"{where}: {exc.strerror or exc}") from exc
        session = self.factory()
        session.peer = (self.host, self.port)
        session.start(sock)
        return session

    def spawn(self) -> gevent.Greenlet:
        """Connect in a new greenlet; its value is the session (or it raises ConnectError)."""
        return gevent.spawn(self.connect)


def require_gevent_ssl(context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """A TLS context must be gevent's: the standard library's would block the hub
    during the handshake. (After monkey-patching, ssl.SSLContext is gevent's.)"""
    if context is not None and not isinstance(context, gssl.SSLContext):
        raise TypeError("ssl_context must be a gevent.ssl.SSLContext (or monkey-patch ssl first)")
    return context


def _open_connection(host: str, port: int) -> socket.socket:
    """Connect to an IP address directly; resolve a name first. (gevent's resolver
    runs getaddrinfo in a thread even for "127.0.0.1": a thousand clients notice.)"""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = gsocket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return gsocket.create_connection((host, port))


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
