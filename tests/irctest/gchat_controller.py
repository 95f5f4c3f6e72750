"""irctest controller: a fresh gchat (memory store) per test, serving IRC on irctest's port.

irctest (../shared/irctest, not part of this repository) imports this module with
``pytest --controller tests.irctest.gchat_controller`` from its own directory, so the
repository root must be on PYTHONPATH (``make irctest`` does that). It is not a pytest
test module of gchat's own suite: it imports ``irctest``, which only exists there.

``capabilities`` stays empty on purpose: a CAP that gchat does not offer (NAK) skips
its tests instead of failing them, as IRC.md describes; whatever gchat offers in CAP LS
is tested for real. ``isupport`` lists the 005 tokens issue 13 asks for and gchat sends
(isupport.py's testValues checks them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from irctest import patma
from irctest.basecontrollers import BaseServerController
from irctest.runner import NotImplementedByController

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "My.Little.Server"  # the name irctest checks in PONG, 004, WHO, WHOIS


class GchatController(BaseServerController):
    software_name = "gchat"
    supported_sasl_mechanisms = {"PLAIN"}
    supports_sts = False
    isupport = {
        "CASEMAPPING": "ascii",
        "CHANTYPES": "#&",  # room "#x" is channel #x, room "x" is channel &x
        "NICKLEN": patma.StrRe("(1[4-9]|[2-9][0-9]|[1-9][0-9][0-9]+)"),  # irctest: >= 14
        "CHANNELLEN": patma.StrRe("[1-9][0-9]*"),
        "LINELEN": patma.StrRe("[1-9][0-9]*"),
        "UTF8ONLY": None,
        "TOPICLEN": patma.StrRe("[1-9][0-9]*"),
    }

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None,
        websocket_hostname: str | None,
        websocket_port: int | None,
    ) -> None:
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        if ssl:
            raise NotImplementedByController("TLS")
        # run_services: gchat has no services; accounts are its own (registerUser).
        # faketime: ignored (no test of the T1 selection needs it; faketime_enabled
        # stays False, which is how tests learn it).
        assert self.proc is None
        self.json_port = _json_port()
        self.hostname = hostname
        self.port = port
        command = [
            sys.executable, "-m", "gchat.server",
            "--host", "127.0.0.1",
            "--port", str(self.json_port),  # below the ephemeral range: see _json_port
            "--irc-port", str(port),
            "--http-port", "0",
            "--irc-name", SERVER_NAME,
            "--store", "memory",
            "--idle-timeout", "0",
            "--log-level", "WARNING",
            "--password-min-length", "1",  # irctest registers passwords like "bar"
        ]
        if password is not None:
            command += ["--token", password]  # gchat's PASS is its token
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        # execute(): its own session (process group), output shown only with
        # IRCTEST_DEBUG_LOGS=1.
        self.proc = self.execute(command, proc_name="gchat", cwd=REPO_ROOT, env=env)

    def wait_for_services(self) -> None:
        """No services to wait for: accounts are gchat's own."""

    def registerUser(self, case: Any, username: str, password: str | None = None) -> None:
        """Register an account through gchat's JSON door, as the web page does: hello,
        then the `register` op (an IRC line could not carry irctest's 592-byte password)."""
        assert password
        self.wait_for_port()  # the server is up once its IRC port answers
        with socket.create_connection(("127.0.0.1", self.json_port), timeout=10) as conn:
            conn.sendall(json.dumps({"op": "hello", "nick": username, "proto": 2, "id": 1})
                         .encode() + b"\n" + json.dumps({"op": "register", "password": password,
                                                         "id": 2}).encode() + b"\n")
            replies = conn.makefile("rb")
            for line in replies:
                reply = json.loads(line)
                assert reply.get("op") != "error", reply
                if reply.get("id") == 2:
                    break
            conn.sendall(b'{"op":"quit"}\n')

    def kill_proc(self) -> None:
        self.terminate()

    def terminate(self) -> None:
        """SIGTERM (gchat says goodbye and exits), then SIGKILL after 10 s."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None


def _json_port() -> int:
    """A free port for gchat's JSON door, below Linux's ephemeral range (32768 and up).
    irctest picks each test's IRC port in that range (bind to 0, then release it); a
    JSON door on port 0 could take another parallel test's IRC port before its server
    binds it, and that server would not start."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


def get_irctest_controller_class() -> type[GchatController]:
    return GchatController
