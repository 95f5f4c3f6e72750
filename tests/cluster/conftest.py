"""Fixtures for the cluster tests: a real redis-server on a free loopback port, and
gchat nodes as subprocesses sharing it."""

from __future__ import annotations

import os
import random
import shutil
import time

import gevent
import pytest
from gevent import socket as gsocket
from gevent import subprocess

from tests.server.process import ServerProcess

NODE_TIMEOUT = 1.0  # seconds: how soon a dead node's sessions get presence quit


def redis_server_binary() -> str:
    """The redis-server binary; installed from Debian's packages when missing (as root)."""
    path = shutil.which("redis-server")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        path = shutil.which("redis-server")
    if path is None:
        pytest.fail("the cluster tests need redis-server: apt-get install redis-server")
    return path


def free_port() -> int:
    """A free port below Linux's ephemeral range, so no outgoing connection takes it
    before the server that is told to use it binds it (Redis on a restart, too)."""
    return _free_ports(1)


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free (see free_port)."""
    return _free_ports(2)


def _free_ports(count: int) -> int:
    for _ in range(100):
        base = random.randrange(20000, 32000)
        sockets = [gsocket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(sockets):
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise AssertionError(f"no {count} free ports in a row")


class RespClient:
    """Just enough of Redis's protocol to send an admin command and read a one-line reply."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = gsocket.create_connection(address, timeout=5)

    def command(self, *words: str) -> bytes:
        self.sock.sendall(b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words))
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self.sock.recv(4096)
        return reply.rstrip()


class RedisServer:
    """redis-server on 127.0.0.1 with its data (an append-only file) in `directory`."""

    def __init__(self, directory) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with gsocket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            assert self.proc.poll() is None, (self.directory / "redis.log").read_text()
            gevent.sleep(0.02)

    def client(self) -> RespClient:
        """A raw connection for admin commands (CLIENT KILL ...)."""
        return RespClient(("127.0.0.1", self.port))

    def kill(self) -> None:
        """SIGKILL: Redis keeps what its append-only file holds."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def spawn_node(redis_server, tmp_path):
    """Start gchat nodes joined to `redis_server`; SIGKILLed after the test."""
    nodes: list[ServerProcess] = []

    def spawn(*args: str) -> ServerProcess:
        node = ServerProcess("--backplane", redis_server.url, "--node-timeout", str(NODE_TIMEOUT),
                             "--rate", "100000", "--burst", "100000", *args)
        nodes.append(node)
        return node

    yield spawn
    for node in nodes:
        node.kill()
