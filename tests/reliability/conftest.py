"""The reliability suite runs against the server as users run it: a subprocess, whose
file descriptors and memory the tests can read from /proc."""

from __future__ import annotations

import itertools
import os
import resource
from pathlib import Path

import pytest

from tests.rawclient import Client
from tests.server.process import ServerProcess

# The rate limit out of the way: the load is the point.
FLAGS = ("--rate", "1000000", "--burst", "1000000")
_probes = itertools.count(1)


class Live:
    """A running server subprocess and what the tests read of it."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.address = ("127.0.0.1", process.port)

    def client(self, nick: str | None = None) -> Client:
        return self.process.client(nick)

    def stats(self) -> dict:
        """The server's live counts (the `stats` op), asked by a fresh session that
        then quits: `sessions` and `registered` include the asker."""
        probe = Client(self.address)
        try:
            probe.hello(f"probe{next(_probes)}")
            reply = probe.request("stats")
            assert reply["op"] == "ok", reply
            return reply
        finally:
            probe.close()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.proc.pid}/fd"))

    def open_files(self) -> list[str]:
        """What the server's file descriptors point at (sockets, the database...)."""
        fd_dir = f"/proc/{self.process.proc.pid}/fd"
        files = []
        for fd in os.listdir(fd_dir):
            try:
                files.append(os.readlink(f"{fd_dir}/{fd}"))
            except FileNotFoundError:
                pass  # closed meanwhile
        return sorted(files)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(autouse=True)
def many_files():
    """Hundreds of clients in the test process: as many open files as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GCHAT_STORE", f"sqlite:{tmp_path / 'gchat.db'}")


@pytest.fixture
def spawn_live():
    """Start live servers with extra flags; SIGKILLed after the test."""
    started: list[ServerProcess] = []

    def spawn(*flags: str) -> Live:
        process = ServerProcess(*FLAGS, *flags)
        started.append(process)
        return Live(process)

    yield spawn
    for process in started:
        process.kill()


@pytest.fixture
def live(spawn_live) -> Live:
    return spawn_live()
