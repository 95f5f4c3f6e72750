"""The interactive client in a real pseudo-terminal (pexpect), its screen rendered by a
terminal emulator (pyte): what the user sees, not the escape codes."""

from __future__ import annotations

import os
import sys
import time

import pexpect
import pyte
import pytest

from tests.server.process import ROOT, ServerProcess

ROWS, COLUMNS = 20, 100


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GCHAT_STORE", f"sqlite:{tmp_path / 'gchat.db'}")


class Terminal:
    """A client in a pty, and the screen it draws."""

    def __init__(self, port: int, nick: str) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        command = ["-m", "gchat.client", "--port", str(port), "--nick", nick]
        self.child = pexpect.spawn(sys.executable, command, cwd=str(ROOT), env=env,
                                   dimensions=(ROWS, COLUMNS))

    def pump(self, seconds: float = 0.05) -> None:
        try:
            self.stream.feed(self.child.read_nonblocking(65536, timeout=seconds))
        except pexpect.TIMEOUT:
            pass

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, predicate, timeout: float = 15.0) -> list[str]:
        """Read the terminal until the screen satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if predicate(self.lines()):
                return self.lines()
        raise AssertionError("the screen never showed it:\n" + "\n".join(self.lines()))

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def prompt_line(lines: list[str]) -> str:
    return next(line for line in reversed(lines) if line.startswith("["))


def test_a_message_appears_above_a_half_typed_line(tmp_path):
    server = ServerProcess()
    terminal = Terminal(server.port, "alice")
    try:
        terminal.wait_for(lambda lines: any(line.startswith("[lobby] >") for line in lines))
        terminal.child.send("half typ")
        terminal.wait_for(lambda lines: prompt_line(lines) == "[lobby] > half typ")
        bob = server.client("bob")
        bob.join("lobby")
        bob.request("say", room="lobby", text="hello from bob")
        # The message appears above the prompt, and what alice was typing is still there.
        lines = terminal.wait_for(lambda lines: any("<bob> hello from bob" in line for line in lines)
                                  and any(line.startswith("[lobby] >") for line in lines))
        said = next(i for i, line in enumerate(lines) if "<bob> hello from bob" in line)
        prompt = max(i for i, line in enumerate(lines) if line.startswith("[lobby] >"))
        assert said < prompt and lines[prompt] == "[lobby] > half typ"
        assert any("bob joined lobby" in line for line in lines[:prompt])  # presence, dimmed
        terminal.child.send("ed\r")
        terminal.wait_for(lambda lines: any("<alice> half typed" in line for line in lines))
        assert bob.recv_until(lambda f: f.get("text") == "half typed")[-1]["from"] == "alice"
        # Colour: bob's nick is coloured, and the same colour every time.
        row = terminal.screen.buffer[said]
        column = lines[said].index("<bob>")
        assert row[column].fg not in ("default", "white")
        terminal.child.send("/join #dev\r")
        terminal.wait_for(lambda lines: prompt_line(lines).startswith("[#dev] >"))
        terminal.child.send("/nosuch\r")
        lines = terminal.wait_for(lambda lines: any("there is no command /nosuch" in line for line in lines))
        assert not any("Traceback" in line for line in lines)
        terminal.child.send("/quit\r")
        terminal.child.expect(pexpect.EOF, timeout=15)
        terminal.child.close()
        assert terminal.child.exitstatus == 0
    finally:
        terminal.close()
        server.kill()


def test_ctrl_d_leaves(tmp_path):
    server = ServerProcess()
    terminal = Terminal(server.port, "dee")
    try:
        terminal.wait_for(lambda lines: any(line.startswith("[lobby] >") for line in lines))
        watcher = server.client("watcher")
        watcher.join("lobby")
        terminal.child.sendcontrol("d")
        terminal.child.expect(pexpect.EOF, timeout=15)
        terminal.child.close()
        assert terminal.child.exitstatus == 0
        assert watcher.recv_until(lambda f: f.get("event") == "quit")[-1]["nick"] == "dee"
    finally:
        terminal.close()
        server.kill()
