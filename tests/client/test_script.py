"""The client on pipes, as scripts use it: a real client process against a real server
process, including a server restart in the middle."""

from __future__ import annotations

import json
import os
import signal
import sys

import gevent
import pytest
from gevent import subprocess

from tests.server.process import ROOT, ServerProcess


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GCHAT_STORE", f"sqlite:{tmp_path / 'gchat.db'}")


class ClientProcess:
    """`python -m gchat.client` with pipes."""

    def __init__(self, port: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gchat.client", "--port", str(port), *args],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     env={**os.environ, "GCHAT_TOKEN": "", **(env or {})})
        self.err = b""
        self._err_reader = gevent.spawn(self._read_err)

    def _read_err(self) -> None:
        while line := self.proc.stderr.readline():
            self.err += line

    def type(self, *lines: str) -> None:
        self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
        self.proc.stdin.flush()

    def events(self, until, timeout: float = 20) -> list[dict]:
        """JSON lines from stdout up to the first that satisfies `until`."""
        got = []
        with gevent.Timeout(timeout, AssertionError(f"not seen; so far {got}, stderr {self.err!r}")):
            while True:
                line = self.proc.stdout.readline()
                assert line, f"the client exited: {self.err!r}"
                got.append(json.loads(line))
                if until(got[-1]):
                    return got

    def wait_err(self, text: bytes, timeout: float = 20) -> None:
        with gevent.Timeout(timeout, AssertionError(f"{text!r} not in stderr: {self.err!r}")):
            while text not in self.err:
                gevent.sleep(0.02)

    def finish(self, timeout: float = 20) -> tuple[int, bytes]:
        self.proc.stdin.close()
        with gevent.Timeout(timeout, AssertionError("the client did not exit")):
            out = self.proc.stdout.read()
            code = self.proc.wait()
            self._err_reader.join()
        return code, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes():
    started: list = []
    yield started
    for process in started:
        process.kill()


def run_client(port: int, stdin: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gchat.client", "--port", str(port), *args], cwd=ROOT,
                          input=stdin.encode(), capture_output=True, timeout=30,
                          env={**os.environ, **(env or {})})


def test_a_script_runs_every_command_and_exits_at_eof(processes):
    server = ServerProcess()
    processes.append(server)
    bob = server.client("bob")
    bob.join("lobby")
    result = run_client(server.port, "hello from a script\n/join #dev\nin dev\n/who\n/rooms\n/msg bob psst\n",
                        "--nick", "scripted")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "<scripted> hello from a script" in out and "<scripted> in dev" in out
    assert "in #dev: @scripted" in out  # who creates a room is its operator
    assert "-> *bob* psst" in out
    assert [f["text"] for f in bob.recv_until(lambda f: f["op"] == "whisper") if f["op"] == "msg"] == [
        "hello from a script"]
    assert b"Traceback" not in result.stderr


def test_the_topic_and_modes_from_a_script(processes):
    server = ServerProcess()
    processes.append(server)
    bob = server.client("bob")
    bob.join("#dev")
    bob.request("topic", room="#dev", text="old news")
    result = run_client(server.port, "/join #dev\n/topic mine now\n", "--nick", "plain")
    assert result.returncode == 1
    assert "topic of #dev: old news (set by bob)" in result.stdout.decode()
    assert "only operators of #dev may do that" in result.stderr.decode()
    result = run_client(server.port, "/join #mine\n/topic ship it\n/mode -t\n/topic\n/mode +x\n",
                        "--nick", "owner")
    assert result.returncode == 1  # the bad /mode
    out = result.stdout.decode()
    assert "owner set the topic of #mine: ship it" in out and "owner set #mine -t" in out
    assert "topic of #mine: ship it (set by owner)" in out
    assert "usage: /mode +o|-o NICK or /mode +t|-t" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_a_failed_command_is_explained_and_the_status_is_1(processes):
    server = ServerProcess()
    processes.append(server)
    result = run_client(server.port, "/frobnicate\n/leave #nowhere\n/msg nobody hi\nstill talking\n",
                        "--nick", "oops")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "there is no command /frobnicate: type /help for the list" in err
    assert "you are not in #nowhere: /join #nowhere first" in err
    assert "nobody is called nobody" in err
    assert "<oops> still talking" in result.stdout.decode()  # a failure does not stop the script
    assert "Traceback" not in err


def test_a_refused_nick_or_no_server_is_a_clear_error(processes):
    server = ServerProcess()
    processes.append(server)
    holder = server.client("taken")  # noqa: F841  (holds the nick)
    result = run_client(server.port, "", "--nick", "taken")
    assert result.returncode == 1 and b"the server refused 'taken'" in result.stderr
    result = run_client(server.port, "", "--nick", "9lives")
    assert result.returncode == 1 and b"9lives" in result.stderr
    server.kill()
    result = run_client(server.port, "", "--nick", "lonely")
    assert result.returncode == 1 and b"cannot connect to 127.0.0.1:" in result.stderr
    assert b"Traceback" not in result.stderr


def test_json_prints_each_event_as_one_line(processes):
    server = ServerProcess()
    processes.append(server)
    client = ClientProcess(server.port, "--nick", "machine", "--json")
    processes.append(client)
    bob = server.client("bob")
    bob.join("lobby")
    bob.request("say", room="lobby", text="hi machine")
    got = client.events(lambda f: f.get("op") == "msg")
    assert got[-1] == {"op": "msg", "room": "lobby", "from": "bob", "text": "hi machine", "seq": 1,
                       "ts": got[-1]["ts"]}
    client.type("/who")
    assert client.events(lambda f: f.get("op") == "ok")[-1]["members"] == ["bob", "machine"]
    code, _ = client.finish()
    assert code == 0


def test_the_client_reconnects_and_catches_up_without_gaps_or_duplicates(processes):
    first = ServerProcess()
    processes.append(first)
    port = first.port
    client = ClientProcess(port, "--nick", "alice", "--json")
    processes.append(client)
    bob = first.client("bob")
    bob.join("lobby")
    bob.request("say", room="lobby", text="m1")
    client.events(lambda f: f.get("text") == "m1")

    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0
    client.wait_err(b"connection lost (the server said shutdown); reconnecting")
    # While the client cannot get in (this server wants a token), two messages are said.
    locked = ServerProcess("--port", str(port), "--token", "s3cret")
    processes.append(locked)
    carol = locked.client()
    carol.hello("carol", token="s3cret")
    carol.join("lobby")
    carol.request("say", room="lobby", text="m2")
    carol.request("say", room="lobby", text="m3")
    locked.proc.send_signal(signal.SIGTERM)
    assert locked.finish() == 0
    # Back, recovering at most one message per join: the client must page the gap.
    back = ServerProcess("--port", str(port), "--max-recover", "1")
    processes.append(back)
    client.wait_err(b"reconnected to 127.0.0.1:")
    client.wait_err(b"caught up 2 messages in lobby")
    dave = back.client("dave")
    dave.join("lobby")
    dave.request("say", room="lobby", text="m4")
    got = client.events(lambda f: f.get("text") == "m4")
    code, rest = client.finish()
    msgs = [f for f in got if f.get("op") == "msg"] + [json.loads(line) for line in rest.splitlines()
                                                        if json.loads(line).get("op") == "msg"]
    # m1 was shown before; after the restart: m2, m3 caught up, then m4 live, once each.
    assert [(m["seq"], m["text"]) for m in msgs] == [(2, "m2"), (3, "m3"), (4, "m4")]
    assert code == 0
    assert b"Traceback" not in client.err


def test_the_client_speaks_tls(make_server, certificate):
    cert, key = certificate
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    tls_port = server.addresses[1][1]
    result = run_client(tls_port, "over tls\n/who\n", "--tls", "--ca-file", str(cert), "--nick", "secure",
                        "--json")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["text"] for f in frames if f["op"] == "msg"] == ["over tls"]
    assert frames[-1]["members"] == ["secure"]
    untrusted = run_client(tls_port, "", "--tls", "--nick", "doubtful")  # the system CAs do not know it
    assert untrusted.returncode == 1 and b"TLS handshake failed" in untrusted.stderr
