"""Real IRC clients against a real server: irssi in tmux, weechat-headless, and a JSON
client in one room (issue 13). Debian packages `irssi weechat-headless tmux`, installed
by `.ci/run`; the tests skip where they are missing.

irssi is read from its tmux pane (capture-pane) and typed into with send-keys;
weechat-headless is read from its logs (flushed at once) and driven through its FIFO.
Every wait polls a condition against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import gevent
import pytest
from gevent import subprocess

from tests.irc.test_door import free_port
from tests.rawclient import Client
from tests.server.process import ServerProcess

POLL = 0.05  # seconds between looks at a pane or a log
WAIT = 10.0  # the longest any one thing may take to show


def require(*programs: str) -> None:
    missing = [name for name in programs if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian packages "
                    f"`{' '.join(missing)}`; .ci/run installs them)")


def wait_until(condition, what: str, show=lambda: "", timeout: float = WAIT):
    """Poll `condition` until it is truthy (and return it), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; saw:\n{show()}")
        gevent.sleep(POLL)


def next_frame(client: Client, what: str, timeout: float = WAIT, **fields) -> dict:
    """The first frame (skipping others) that has all of `fields`."""
    try:
        frames = client.recv_until(lambda f: all(f.get(k) == v for k, v in fields.items()),
                                   timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from None
    return frames[-1]


class Irssi:
    """irssi in a detached tmux session on a private tmux server (its own socket)."""

    def __init__(self, home: Path, port: int, nick: str) -> None:
        home.mkdir()
        # A fresh home with a minimal config: no networks or servers to autoconnect to,
        # nothing saved back; the send queue sped up (irssi sends a line every 2.2 s
        # after a burst of 5 by default, which would make each test half a minute).
        (home / "config").write_text(
            "servers = ( );\nchatnets = { };\nchannels = ( );\n"
            "settings = {\n  core = {\n"
            f'    nick = "{nick}";\n    user_name = "{nick}u";\n'
            '    real_name = "irssi under test";\n    settings_autosave = "no";\n  };\n'
            '  "irc/core" = { cmd_queue_speed = "10msec"; cmds_max_at_once = "50"; };\n'
            "};\n")
        self.nick = nick
        # A private tmux server, its socket in a short directory of our own (a socket
        # path must fit in 108 bytes; tmp_path may not), removed in close().
        self.socket_dir = Path(tempfile.mkdtemp(prefix="gchat-tmux-"))
        self.socket = str(self.socket_dir / "socket")
        self.env = {**os.environ, "LANG": "C.UTF-8", "TERM": "xterm-256color"}
        self.env.pop("TMUX", None)
        try:
            self.tmux("new-session", "-d", "-s", "irssi", "-x", "200", "-y", "50",
                      f"irssi --home={home} -c 127.0.0.1 -p {port} -n {nick}")
        except BaseException:
            self.close()
            raise

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], env=self.env,
                              capture_output=True, timeout=10)
        assert done.returncode == 0, f"tmux {args}: {done.stderr.decode()}"
        return done.stdout.decode(errors="replace")

    def screen(self) -> str:
        """What the active window shows (wrapped lines joined)."""
        return self.tmux("capture-pane", "-p", "-J", "-t", "irssi")

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "irssi", "-l", line)
        self.tmux("send-keys", "-t", "irssi", "Enter")

    def wait_for(self, pattern: str, what: str) -> re.Match:
        """Wait until the pane matches the regular expression `pattern`."""
        return wait_until(lambda: re.search(pattern, self.screen(), re.MULTILINE),
                          f"irssi {self.nick}: {what}", self.screen)

    def close(self) -> None:
        # Killing the tmux server hangs up irssi.
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class Weechat:
    """weechat-headless in the foreground, driven through its FIFO, read from its logs."""

    def __init__(self, home: Path, port: int, nick: str, channel: str) -> None:
        self.home, self.nick = home, nick
        setup = ";".join([
            "/set logger.file.flush_delay 0",  # write log lines at once (default 120 s)
            # Its anti-flood queue delays lines by 2 s (3.x; `anti_flood`, in ms, in 4.x).
            "/set irc.server_default.anti_flood_prio_high 0",
            "/set irc.server_default.anti_flood_prio_low 0",
            f"/server add t 127.0.0.1/{port} -notls -nicks={nick} -autojoin={channel}",
            "/connect t",
        ])
        self.proc = subprocess.Popen(
            ["weechat-headless", "--dir", str(home), "-P", "irc,logger,fifo", "-r", setup],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "LANG": "C.UTF-8"}, start_new_session=True)

    def log(self, buffer: str) -> str:
        """The log of buffer `buffer` (a channel, a nick, or `server.t`), or ''."""
        path = self.home / "logs" / f"irc.{'' if buffer == 'server.t' else 't.'}{buffer.lower()}.weechatlog"
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, buffer: str, pattern: str, what: str) -> re.Match:
        return wait_until(lambda: re.search(pattern, self.log(buffer), re.MULTILINE),
                          f"weechat {self.nick}: {what}", lambda: self.log(buffer))

    def run(self, buffer: str, text: str) -> None:
        """Type `text` (a message, or a /command) into `buffer` (irc.t.#room, irc.server.t)."""
        fifo = wait_until(lambda: next(iter(self.home.glob("weechat_fifo_*")), None),
                          "weechat's FIFO", lambda: str(list(self.home.iterdir())))
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, f"{buffer} *{text}\n".encode())
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def says(nick: str, text: str) -> str:
    """irssi's pane line for a channel message: `12:34 < alice> text`."""
    return rf"<[ @+]?{re.escape(nick)}> {re.escape(text)}$"


def logged(nick: str, text: str) -> str:
    """weechat's log line for a message: `date<TAB>alice<TAB>text`."""
    return rf"\t[@+]?{re.escape(nick)}\t{re.escape(text)}$"


class RealClients:
    """A real `python -m gchat.server` with an IRC port, and the clients a test opens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.irc_port = free_port()
        self.server = ServerProcess("--irc-port", str(self.irc_port), "--irc-name", "irc.test",
                                    env={"GCHAT_STORE": f"sqlite:{folder / 'gchat.db'}"})
        self.opened: list[Irssi | Weechat | Client] = []

    def irssi(self, nick: str) -> Irssi:
        self.opened.append(Irssi(self.folder / f"irssi-{nick}", self.irc_port, nick))
        return self.opened[-1]

    def weechat(self, nick: str, channel: str) -> Weechat:
        self.opened.append(Weechat(self.folder / f"weechat-{nick}", self.irc_port, nick, channel))
        return self.opened[-1]

    def json(self, nick: str) -> Client:
        self.opened.append(self.server.client(nick))
        return self.opened[-1]

    def close(self) -> None:
        for client in reversed(self.opened):
            client.close()
        self.server.kill()


@pytest.fixture
def gchat(tmp_path):
    require("tmux", "irssi")
    clients = RealClients(tmp_path)
    yield clients
    clients.close()


def join_with_irssi(irssi: Irssi, channel: str) -> None:
    irssi.wait_for(r"Welcome to the gchat IRC network", "registered")
    irssi.type(f"/join {channel}")
    irssi.wait_for(rf"{re.escape(irssi.nick)} \[.*\] has joined {re.escape(channel)}", "joined")


def test_irssi_talks_with_a_json_client(gchat):
    alice = gchat.json("alice")
    alice.join("#room")
    ivy = gchat.irssi("ivy")
    join_with_irssi(ivy, "#room")
    next_frame(alice, "alice sees ivy join", op="presence", event="join", nick="ivy")

    ivy.type("hello from irssi")
    msg = next_frame(alice, "ivy's message", op="msg", **{"from": "ivy"})
    assert (msg["room"], msg["text"]) == ("#room", "hello from irssi")

    assert alice.request("say", room="#room", text="hello from json")["op"] == "ok"
    ivy.wait_for(says("alice", "hello from json"), "alice's message")


def test_irssi_weechat_and_json_in_one_room(gchat):
    require("weechat-headless")
    alice = gchat.json("alice")
    alice.join("#room")
    wendy = gchat.weechat("wendy", "#room")  # it starts while irssi starts
    ivy = gchat.irssi("ivy")
    join_with_irssi(ivy, "#room")
    joined = set()
    while joined != {"ivy", "wendy"}:  # in either order
        joined.add(next_frame(alice, f"joins after {joined}", op="presence", event="join")["nick"])
    wendy.wait_for("#room", r"\tivy \(.*\) has joined #room$|Channel #room: 3 nicks",
                   "ivy in #room")

    # Each one's message reaches the other two.
    ivy.type("one from irssi")
    wendy.wait_for("#room", logged("ivy", "one from irssi"), "ivy's message")
    msg = next_frame(alice, "ivy's message", op="msg", **{"from": "ivy"})
    assert msg["text"] == "one from irssi"

    wendy.run("irc.t.#room", "two from weechat")
    ivy.wait_for(says("wendy", "two from weechat"), "wendy's message")
    msg = next_frame(alice, "wendy's message", op="msg", **{"from": "wendy"})
    assert msg["text"] == "two from weechat"

    assert alice.request("say", room="#room", text="three from json")["op"] == "ok"
    ivy.wait_for(says("alice", "three from json"), "alice's message")
    wendy.wait_for("#room", logged("alice", "three from json"), "alice's message")

    # Whispers: JSON to weechat is a PRIVMSG to its nick (a query buffer); /msg back,
    # from weechat and from irssi, is a JSON whisper.
    assert alice.request("whisper", to="wendy", text="psst wendy")["op"] == "ok"
    wendy.wait_for("alice", logged("alice", "psst wendy"), "alice's whisper, in a query")
    wendy.run("irc.server.t", "/msg alice psst alice")
    whisper = next_frame(alice, "wendy's /msg", op="whisper", **{"from": "wendy"})
    assert whisper["text"] == "psst alice"
    ivy.type("/msg alice from irssi, privately")
    whisper = next_frame(alice, "ivy's /msg", op="whisper", **{"from": "ivy"})
    assert whisper["text"] == "from irssi, privately"

    # Nick changes: a presence rename for JSON, a NICK for the other IRC client.
    ivy.type("/window goto #room")  # back from the query /msg may have opened
    ivy.type("/nick ivy2")
    rename = next_frame(alice, "ivy's rename", op="presence", event="rename")
    assert (rename["room"], rename["old"], rename["nick"]) == ("#room", "ivy", "ivy2")
    wendy.wait_for("#room", r"\tivy is now known as ivy2$", "ivy's rename")
    ivy.wait_for(r"You're now known as ivy2", "its own rename")
    wendy.run("irc.server.t", "/nick wendy2")
    rename = next_frame(alice, "wendy's rename", op="presence", event="rename")
    assert (rename["room"], rename["old"], rename["nick"]) == ("#room", "wendy", "wendy2")
    ivy.wait_for(r"wendy is now known as wendy2", "wendy's rename")
    ivy.type("four, renamed")
    wendy.wait_for("#room", logged("ivy2", "four, renamed"), "ivy2's message")
    msg = next_frame(alice, "ivy2's message", op="msg", **{"from": "ivy2"})
    assert msg["text"] == "four, renamed"

    # A /quit once nothing is queued (both clients queue lines, and /quit drops them).
    ivy.type("/quit see you")
    quit = next_frame(alice, "ivy2's quit", op="presence", event="quit")
    assert (quit["room"], quit["nick"]) == ("#room", "ivy2")
    wendy.wait_for("#room", r"\tivy2 \(.*\) has quit \(Quit: see you\)$", "ivy2's quit")
