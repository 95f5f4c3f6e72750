"""The server as users run it: `python -m gchat.server` as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import gevent
from gevent import subprocess
from gevent.event import Event

from tests.rawclient import Client

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """`python -m gchat.server` with the given flags; knows its port once it listens."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, command=None) -> None:
        # No IRC or HTTP port unless asked for: tests must not compete for 6667 and 7080.
        command = command or [sys.executable, "-m", "gchat.server", "--port", "0",
                              "--irc-port", "0", "--http-port", "0", *args]
        self.proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.log = b""
        self.port = None
        with gevent.Timeout(20, AssertionError("the server did not start")):
            while self.port is None:
                line = self.proc.stderr.readline()
                assert line, f"the server exited early:\n{self.log.decode()}"
                self.log += line
                if match := LISTENING.search(line):
                    self.port = int(match.group(1))
        # Keep reading the log, so a chatty server never blocks on a full pipe.
        self._grew = Event()
        self._drain = gevent.spawn(self._read_log)

    def _read_log(self) -> None:
        while line := self.proc.stderr.readline():
            self.log += line
            self._grew.set()

    def client(self, nick: str | None = None) -> Client:
        client = Client(("127.0.0.1", self.port))
        if nick:
            client.hello(nick)
        return client

    def finish(self, timeout: float = 20) -> int:
        """Wait for exit; return the exit code and keep the rest of stderr."""
        with gevent.Timeout(timeout, AssertionError("the server did not exit")):
            self._drain.join()
            return self.proc.wait()

    def wait_log(self, text: bytes, timeout: float = 10) -> None:
        """Wait until the server's log holds `text`."""
        with gevent.Timeout(timeout, AssertionError(f"{text!r} never appeared in the log")):
            while text not in self.log:
                self._grew.clear()
                self._grew.wait()

    def kill(self) -> None:
        """SIGKILL the server (and anything it started), as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the server to completion (for errors and --help)."""
    return subprocess.run([sys.executable, "-m", "gchat.server", *args], cwd=ROOT, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=30)
