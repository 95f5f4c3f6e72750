"""Accounts in the terminal client: GCHAT_PASSWORD (or --password) logs in, /register,
/password and /drop, clear refusals, a login again after a reconnect, and a password
that shows nowhere: not in `ps`, the output, the server's log or the screen."""

from __future__ import annotations

import signal
import sys

import gevent
import pexpect
import pytest
from gevent import subprocess

from tests.client.test_script import ClientProcess, run_client
from tests.client.test_terminal import Terminal, prompt_line
from tests.server.process import ROOT, ServerProcess

PASSWORD = "client pass 1"


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GCHAT_STORE", f"sqlite:{tmp_path / 'gchat.db'}")
    monkeypatch.delenv("GCHAT_PASSWORD", raising=False)


@pytest.fixture
def server():
    started = ServerProcess()
    yield started
    started.kill()


def register(server: ServerProcess, nick: str, password: str = PASSWORD) -> None:
    """Make `nick` an account through the JSON door, and leave."""
    client = server.client()
    client.hello(nick, proto=2)
    assert client.request("register", password=password)["account"] == nick
    client.request("quit")


def test_gchat_password_logs_in_and_never_shows_in_ps(server):
    register(server, "alice")
    client = ClientProcess(server.port, "--nick", "alice", "--json", env={"GCHAT_PASSWORD": PASSWORD})
    try:
        client.wait_err(b"logged in as alice")
        with open(f"/proc/{client.proc.pid}/cmdline", "rb") as cmdline:
            assert PASSWORD.encode() not in cmdline.read()
        client.type("it is really me")
        said = client.events(lambda f: f.get("op") == "msg")[-1]
        assert (said["from"], said["text"]) == ("alice", "it is really me")
        code, out = client.finish()
        assert code == 0
    finally:
        client.kill()
    assert PASSWORD.encode() not in out + client.err + server.log


def test_a_wrong_or_missing_password_is_a_clear_error(server):
    register(server, "alice")
    wrong = run_client(server.port, "hello\n", "--nick", "alice", env={"GCHAT_PASSWORD": "not it"})
    assert wrong.returncode == 1
    assert b"the server refused 'alice': wrong password for alice" in wrong.stderr
    missing = run_client(server.port, "hello\n", "--nick", "Alice")
    assert missing.returncode == 1
    assert (b"Alice is a registered nick: log in with its password (--password, or better "
            b"GCHAT_PASSWORD), or pick another nick") in missing.stderr
    flag = run_client(server.port, "", "--nick", "alice", "--password", PASSWORD)  # works too
    assert flag.returncode == 0, flag.stderr
    for result in (wrong, missing, flag):
        assert b"Traceback" not in result.stderr
    assert b"not it" not in server.log and PASSWORD.encode() not in server.log


def test_register_password_and_drop_from_a_script(server):
    # /register and /drop take the rest of the line; /password OLD NEW splits at a space.
    result = run_client(server.port, "/register tiny\n/register firstpass\n/password wrong second pass\n"
                        "/password firstpass second pass\n/drop firstpass\n", "--nick", "bob")
    err = result.stderr.decode()
    assert result.returncode == 1  # the refused ones
    assert "error: that password is too short: a password needs at least 8 characters" in err
    assert "registered bob: from now on only its password logs in as it" in err
    assert "error: wrong password for bob" in err
    assert "changed the password of bob" in err
    assert err.count("error: wrong password for bob") == 2  # /drop with the old one
    assert run_client(server.port, "", "--nick", "bob").returncode == 1  # an account now
    result = run_client(server.port, "/drop second pass\n", "--nick", "bob",
                        env={"GCHAT_PASSWORD": "second pass"})
    assert result.returncode == 0, result.stderr
    assert b"deleted the account bob: the nick is anyone's again" in result.stderr
    result = run_client(server.port, "/drop second pass\n", "--nick", "bob")  # a guest again
    assert result.returncode == 1
    assert b"you are not logged in to an account" in result.stderr
    for secret in (b"tiny", b"firstpass", b"second pass"):
        assert secret not in result.stdout and secret not in server.log


def test_a_registered_client_logs_in_again_after_a_restart(processes, tmp_path):
    first = ServerProcess()
    processes.append(first)
    client = ClientProcess(first.port, "--nick", "carol", "--json")
    processes.append(client)
    client.type(f"/register {PASSWORD}")
    client.wait_err(b"registered carol")
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0
    client.wait_err(b"reconnecting")
    back = ServerProcess("--port", str(first.port))
    processes.append(back)
    client.wait_err(b"reconnected to 127.0.0.1:")  # only a login gets carol back
    client.type("still carol")
    assert client.events(lambda f: f.get("op") == "msg")[-1]["from"] == "carol"
    # The operator resets the password while the server is down: the client stops
    # reconnecting, saying why.
    back.proc.send_signal(signal.SIGTERM)
    assert back.finish() == 0
    reset = subprocess.run([sys.executable, "-m", "gchat.admin", "reset", "carol", "--password-stdin"],
                           cwd=ROOT, input=b"changed 22\n", capture_output=True, timeout=30)
    assert reset.returncode == 0, reset.stderr
    third = ServerProcess("--port", str(first.port))
    processes.append(third)
    client.wait_err(b"error: cannot reconnect: wrong password for carol")
    code, _ = client.finish()
    assert code == 0  # every command it was given had succeeded
    assert PASSWORD.encode() not in client.err


@pytest.fixture
def processes():
    started: list = []
    yield started
    for process in started:
        process.kill()


def test_the_terminal_masks_passwords_and_keeps_them_out_of_the_history(server):
    terminal = Terminal(server.port, "dora")
    try:
        terminal.wait_for(lambda lines: any(line.startswith("[lobby] >") for line in lines))
        terminal.child.send(f"/register {PASSWORD}")
        stars = "[lobby] > /register " + "*" * len(PASSWORD)
        terminal.wait_for(lambda lines: prompt_line(lines) == stars)
        terminal.child.send("\r")
        lines = terminal.wait_for(lambda lines: any("registered dora" in line for line in lines))
        terminal.child.send("\x1b[A")  # up: the history does not hold the line
        terminal.pump(0.3)
        lines = terminal.lines()
        assert prompt_line(lines) == "[lobby] >"
        assert stars in lines  # the entered line stays masked on the screen
        assert not any(PASSWORD in line for line in lines)
        terminal.child.send("/quit\r")
        terminal.child.expect(pexpect.EOF, timeout=15)
    finally:
        terminal.close()
    assert PASSWORD.encode() not in server.log


def test_after_a_nick_change_the_client_reconnects_as_a_guest_of_the_new_nick(processes):
    first = ServerProcess()
    processes.append(first)
    register(first, "hank")
    client = ClientProcess(first.port, "--nick", "hank", "--json", env={"GCHAT_PASSWORD": PASSWORD})
    processes.append(client)
    client.wait_err(b"logged in as hank")
    client.type("/nick away")
    client.wait_err(b"you are now away")
    server = first
    for times in (1, 2):  # the second reconnection too: the password stays hank's
        server.proc.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        server = ServerProcess("--port", str(first.port))
        processes.append(server)
        with gevent.Timeout(20, AssertionError(f"no reconnection {times}: {client.err!r}")):
            while client.err.count(b"reconnected to 127.0.0.1:") < times:
                gevent.sleep(0.02)
    client.type("still away")
    assert client.events(lambda f: f.get("op") == "msg")[-1]["from"] == "away"
    code, _ = client.finish()
    assert code == 0 and b"error" not in client.err
