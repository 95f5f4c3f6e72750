"""Listener on real loopback sockets: ids, live sessions, limits, graceful stop."""

from __future__ import annotations

import signal
import sys

import gevent
import pytest
from gevent import socket as gsocket

from gchat.core import Listener, Session
from gchat.errors import ConfigError
from tests.server.process import ServerProcess


class Echo(Session):
    def on_recv(self, line: bytes) -> None:
        self.send(b"%d:%s\n" % (self.session_id, line))


@pytest.fixture
def listener():
    listener = Listener("127.0.0.1", 0, Echo)
    listener.start()
    yield listener
    listener.stop(grace=0.5)


def ask(sock, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    with gevent.Timeout(5):
        data = b""
        while not data.endswith(b"\n"):
            data += sock.recv(1024)
    return data


def test_each_connection_gets_a_session_with_a_unique_id(listener):
    assert listener.address[1] > 0
    socks = [gsocket.create_connection(listener.address) for _ in range(5)]
    ids = [int(ask(sock, b"hi").split(b":")[0]) for sock in socks]
    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert sorted(listener.sessions) == ids and all(isinstance(s, Echo) for s in listener.sessions.values())
    socks[0].close()
    with gevent.Timeout(5):
        while ids[0] in listener.sessions:
            gevent.sleep(0.01)
    for sock in socks[1:]:
        sock.close()


def test_shared_id_counter_across_listeners():
    import itertools
    ids = itertools.count(1)
    a = Listener("127.0.0.1", 0, Echo, session_ids=ids)
    b = Listener("127.0.0.1", 0, Echo, session_ids=ids)
    a.start()
    b.start()
    try:
        with gsocket.create_connection(a.address) as s1, gsocket.create_connection(b.address) as s2:
            got = {ask(s1, b"x").split(b":")[0], ask(s2, b"x").split(b":")[0]}
            assert got == {b"1", b"2"}
    finally:
        a.stop(0.5)
        b.stop(0.5)


def test_max_sessions_refuses_with_the_reject_frame():
    listener = Listener("127.0.0.1", 0, Echo, max_sessions=1, reject=b"full\n")
    listener.start()
    try:
        with gsocket.create_connection(listener.address) as first:
            ask(first, b"hello")
            with gsocket.create_connection(listener.address) as second:
                with gevent.Timeout(5):
                    assert second.recv(100) == b"full\n"
                    assert second.recv(100) == b""
            assert ask(first, b"still") == b"1:still\n"
    finally:
        listener.stop(0.5)


def test_stop_sends_farewell_to_everyone_and_closes(listener):
    socks = [gsocket.create_connection(listener.address) for _ in range(3)]
    for sock in socks:
        ask(sock, b"hi")
    gevent.spawn(listener.stop, 2.0, b"bye\n")
    for sock in socks:
        with gevent.Timeout(5):
            data = b""
            while chunk := sock.recv(100):
                data += chunk
        assert data == b"bye\n"
        sock.close()
    with pytest.raises(OSError):
        gsocket.create_connection(listener.address, timeout=1)


def test_stop_closes_a_session_that_never_reads_after_grace(listener):
    sock = gsocket.create_connection(listener.address)
    ask(sock, b"hi")
    (session,) = listener.sessions.values()
    while session.send(b"x" * 65536):
        gevent.sleep(0)
        if session.queued_bytes > 1_000_000:
            break
    with gevent.Timeout(5):
        listener.stop(grace=0.3, farewell=b"bye\n")
    assert session.wait_closed(0) and not listener.sessions
    sock.close()


def test_bind_failure_is_a_config_error(listener):
    other = Listener("127.0.0.1", listener.address[1], Echo)
    with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1"):
        other.start()


# The server with at most 32 descriptors, soft and hard, so it cannot raise the limit.
LOW_NOFILE = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32)); "
              "os.execv(sys.executable, [sys.executable, '-m', 'gchat.server', *sys.argv[1:]])")


def test_accept_failing_with_emfile_logs_a_line_not_a_traceback_each_time():
    server = ServerProcess(command=[sys.executable, "-c", LOW_NOFILE, "--port", "0",
                                    "--store", "memory"])
    flood: list = []
    try:
        # More connections than descriptors: the kernel completes them all (backlog),
        # the server's accept() fails with EMFILE for the ones beyond its limit.
        flood = [gsocket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(48)]
        server.wait_log(b"Too many open files", timeout=5)
        # Let the shortage last: the server retries about ten times in this second
        # (its pause doubles from 10 ms to 1 s), and each retry fails again.
        gevent.sleep(1.0)
        for sock in flood:
            sock.close()
        # Descriptors free again: it accepts and serves (it paused 1 s at most).
        with gevent.Timeout(5, AssertionError("the server did not resume accepting")):
            assert server.client("alice").request("ping")["op"] == "ok"
        server.proc.send_signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        for sock in flood:
            sock.close()
        server.kill()
    assert b"Traceback" not in server.log, server.log.decode()
    assert b"Too many open files" in server.log
    assert 1 <= server.log.count(b"cannot accept connections") <= 2, server.log.decode()
