"""Shared fixtures: a real chat server on a loopback port, and a per-test deadline.

Tests run on gevent without monkey-patching: the in-process server and the test's
clients are greenlets of one hub, and clients use gevent sockets.
"""

from __future__ import annotations

import os
import shutil

import gevent
import pytest
from gevent import subprocess
from hypothesis import settings

from gchat.server import ChatServer, Settings
from tests.rawclient import Client

TEST_DEADLINE = float(os.environ.get("GCHAT_TEST_DEADLINE", "30"))  # make soak raises it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # A deadlock fails the test instead of hanging the suite (STYLE.md 10).
    with gevent.Timeout(TEST_DEADLINE, AssertionError(f"test did not finish in {TEST_DEADLINE:g} s")):
        yield


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate and key for 127.0.0.1 (PEM files), made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def make_server(tmp_path):
    """Start chat servers on 127.0.0.1, port 0, with Settings overrides; each has its
    own SQLite history (the default store) unless `store` is given."""
    servers: list[ChatServer] = []

    def make(**overrides) -> ChatServer:
        overrides.setdefault("grace", 1.0)
        overrides.setdefault("irc_port", 0)  # IRC and web tests pick a free port
        overrides.setdefault("http_port", 0)
        overrides.setdefault("store", f"sqlite:{tmp_path / f'history-{len(servers)}.db'}")
        server = ChatServer(Settings(host="127.0.0.1", port=0, **overrides))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


@pytest.fixture
def server(make_server) -> ChatServer:
    return make_server()


@pytest.fixture
def connect(server):
    """Open raw test clients to `server`; closed after the test."""
    clients: list[Client] = []

    def open_client(nick: str | None = None, target: ChatServer | None = None) -> Client:
        client = Client((target or server).addresses[0])
        clients.append(client)
        if nick is not None:
            client.hello(nick)
        return client

    yield open_client
    for client in clients:
        client.close()


# Property tests check correctness, not speed: no per-example deadline on a busy machine.
settings.register_profile("gchat", deadline=None)
settings.load_profile("gchat")
