"""Connector: a started client session, or a ConnectError that says why."""

from __future__ import annotations

import ssl

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl

from gchat.core import Connector, Listener, Session
from gchat.errors import ConnectError, GchatError


class Collect(Session):
    def __init__(self) -> None:
        super().__init__()
        self.lines = gevent.queue.Queue()

    def on_recv(self, line: bytes) -> None:
        self.lines.put(line)


class Shout(Session):
    def on_recv(self, line: bytes) -> None:
        self.send(line.upper() + b"\n")


def test_connect_hands_back_a_started_session():
    listener = Listener("127.0.0.1", 0, Shout)
    listener.start()
    try:
        session = Connector(*listener.address, Collect, timeout=5).connect()
        assert isinstance(session, Collect) and session.is_open
        session.send(b"hello\n")
        assert session.lines.get(timeout=5) == b"HELLO"
        greenlet = Connector(*listener.address, Collect).spawn()
        other = greenlet.get(timeout=5)
        other.send(b"again\n")
        assert other.lines.get(timeout=5) == b"AGAIN"
        session.disconnect()
        other.disconnect()
    finally:
        listener.stop(0.5)


def test_refused_is_a_connect_error():
    probe = gsocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}: .*refused") as info:
        Connector("127.0.0.1", port, Collect, timeout=5).connect()
    assert isinstance(info.value, GchatError)


def test_a_silent_tls_peer_times_out():
    silent = gsocket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        with pytest.raises(ConnectError, match="timed out"):
            Connector(*silent.getsockname(), Collect, timeout=0.3, ssl_context=context).connect()
    finally:
        silent.close()


def test_a_blocking_ssl_context_is_refused():
    with pytest.raises(TypeError, match=r"gevent\.ssl\.SSLContext"):
        Connector("127.0.0.1", 1, Collect, ssl_context=ssl.create_default_context())
