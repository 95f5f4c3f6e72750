"""The server as users run it: a real subprocess, its flags, variables and signals."""

from __future__ import annotations

import os
import re
import signal

import pytest
from gevent import socket as gsocket

from gchat.server import Settings
from tests.rawclient import Client
from tests.server.process import ROOT, ServerProcess, run


def test_help_lists_every_option_with_its_variable_and_default():
    result = run("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for name, _default, _ in Settings.options():
        assert f"--{name.replace('_', '-')}" in text
        assert f"GCHAT_{name.upper()}" in text
    assert "default: 7070" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_gives_bye_shutdown_to_everyone_and_exit_0(spawn_server, signum):
    server = spawn_server("--grace", "5")
    alice, bob, anonymous = server.client("alice"), server.client("bob"), server.client()
    alice.join("lobby")
    bob.join("lobby")
    alice.drain()
    server.proc.send_signal(signum)
    for client in (alice, bob, anonymous):
        assert client.read_until_closed() == [{"op": "bye", "reason": "shutdown"}]  # no presence
    assert server.finish() == 0
    log = server.log.decode()
    assert "Traceback" not in log
    assert re.search(r"INFO .*session 1 connected from 127\.0\.0\.1:\d+", log)
    assert re.search(r"INFO .*session 1 disconnected from 127\.0\.0\.1:\d+ \(shutdown\)", log)


def stuff_a_sink(server: ServerProcess) -> Client:
    """A registered client that never reads, with the socket buffers towards it full."""
    sink = server.client("sink")
    sink.join("r")
    pub = server.client("pub")
    pub.join("r")
    for _ in range(20):
        pub.send(*({"op": "say", "room": "r", "text": "x" * 4000} for _ in range(50)))
        pub.drain()
    return sink


def test_shutdown_does_not_wait_past_grace_for_a_client_that_never_reads(spawn_server):
    server = spawn_server("--grace", "0.5", "--rate", "100000", "--burst", "100000")
    stuff_a_sink(server)
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish(timeout=10) == 0


def test_a_second_signal_closes_everything_at_once(spawn_server):
    server = spawn_server("--grace", "600", "--rate", "100000", "--burst", "100000")
    stuff_a_sink(server)
    server.proc.send_signal(signal.SIGTERM)
    server.wait_log(b"shutting down")
    server.proc.send_signal(signal.SIGINT)
    assert server.finish(timeout=10) == 0


def test_environment_variables_set_options(spawn_server):
    server = spawn_server(env={"GCHAT_MAX_TEXT": "5", "GCHAT_TOKEN": "t0k"})
    client = server.client()
    assert client.request("hello", nick="bob")["code"] == "unauthorized"
    reply = client.request("hello", nick="bob", token="t0k")
    assert reply["limits"]["max_text"] == 5


def test_a_bad_option_is_a_clear_error_without_traceback():
    result = run("--max-text", "0")
    assert result.returncode == 2
    assert b"max-text must be positive" in result.stderr and b"Traceback" not in result.stderr
    result = run("--tls-port", "7443")
    assert result.returncode == 2 and b"--tls-port needs --tls-cert and --tls-key" in result.stderr
    result = run("--port", "x")
    assert result.returncode == 2 and b"Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error_and_exit_1():
    busy = gsocket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        result = run("--port", str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert result.returncode == 1
    assert re.search(rb"gchat-server: cannot listen on 127\.0\.0\.1:\d+: ", result.stderr)
    assert b"Traceback" not in result.stderr


def test_unreadable_tls_files_are_a_clear_error(tmp_path):
    result = run("--tls-port", "0", "--tls-cert", str(tmp_path / "none.pem"),
                 "--tls-key", str(tmp_path / "none.key"))
    assert result.returncode == 1 and b"cannot load TLS certificate" in result.stderr
    assert b"Traceback" not in result.stderr


def test_make_run_server_passes_args_and_signals_reach_the_server(spawn_server):
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("make run-server needs the project's .venv")
    command = ["make", "--no-print-directory", "run-server", "ARGS=--port 0 --max-text 7"]
    server = spawn_server(command=command)
    client = server.client()
    assert client.hello("bob")["limits"]["max_text"] == 7
    os.killpg(server.proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
    assert client.read_until_closed() == [{"op": "bye", "reason": "shutdown"}]
    server.finish()
    assert b"shut down" in server.log
