"""Accounts as users run the server: they survive kill -9, and no password, right or
wrong, reaches the server's log (at DEBUG) or its command line."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.irc.test_door import IrcClient, free_port
from tests.server.process import ServerProcess

SECRET, WRONG, PASS_SECRET, NEW_SECRET = ("first-secret-4f1c", "wrong-guess-9a2e",
                                          "pass-guess-77b0", "second-secret-c3d5")


def start(tmp_path: Path, irc_port: int) -> ServerProcess:
    return ServerProcess("--store", f"sqlite:{tmp_path / 'gchat.db'}", "--irc-port",
                         str(irc_port), "--irc-name", "irc.test", "--log-level", "DEBUG")


def test_accounts_survive_kill_9_and_passwords_stay_out_of_logs(tmp_path):
    port = free_port()
    server = start(tmp_path, port)
    alice = server.client()
    alice.hello("alice", proto=2)
    assert alice.request("register", password=SECRET)["op"] == "ok"
    assert alice.request("password", password=WRONG, new_password=NEW_SECRET)["code"] \
        == "bad_password"
    alice.request("quit")
    assert server.client().request("hello", nick="alice", password=WRONG)["code"] \
        == "bad_password"
    irc = IrcClient(port)  # SASL with the right password, then PASS with a wrong one
    plain = base64.b64encode(f"\0alice\0{SECRET}".encode()).decode()
    irc.send("CAP REQ sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain}")
    irc.until("903")
    irc.send("QUIT")
    wrong_pass = IrcClient(port)
    wrong_pass.send(f"PASS {PASS_SECRET}", "NICK alice", "USER a 0 * :A")
    wrong_pass.until("464")
    changer = server.client()
    changer.hello("alice", password=SECRET)
    assert changer.request("password", password=SECRET, new_password=NEW_SECRET)["op"] == "ok"
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    server.kill()  # kill -9, right after the change was acknowledged
    log = server.log
    server = start(tmp_path, port)
    assert server.client().request("hello", nick="alice", password=SECRET)["code"] \
        == "bad_password"
    assert server.client().hello("alice", password=NEW_SECRET, proto=2)["account"] == "alice"
    log += server.log
    server.kill()
    for secret in (SECRET, WRONG, PASS_SECRET, NEW_SECRET):
        assert secret.encode() not in log, secret
        assert secret.encode() not in cmdline
    assert plain.encode() not in log
    assert log.count(b"listening on") >= 2  # both runs' logs were read
