"""The chat page (gchat/web/) in a real browser: headless Chromium driven by Selenium,
against `python -m gchat.server` as a subprocess, next to raw TCP clients.

What a user sees is read from the page's DOM: each room's log is `.log[data-room=R]`,
a message `.msg[data-seq][data-from]` with its text in `.text`; the connection state is
`#status[data-state]`. Every wait is on a condition, with a timeout.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import socket
import threading
import time
from typing import Any

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.rawclient import Client
from tests.web.conftest import (
    ROOT,
    TIMEOUT,
    WebServer,
    free_port,
    missing_browser,
    set_viewport,
    start_chromium,
)

if (_why := missing_browser()) is not None:
    pytest.skip(_why, allow_module_level=True)

# The README's screenshot: refreshed with GCHAT_UPDATE_SCREENSHOT=1, else taken to a
# temporary file (a test run must not leave the checkout changed).
SCREENSHOT = ROOT / "docs" / "web.png"

_MESSAGES = """
const log = document.querySelector(`.log[data-room="${CSS.escape(arguments[0])}"]`);
if (!log) return null;
return Array.from(log.querySelectorAll(".msg"),
                  (line) => [Number(line.dataset.seq), line.dataset.from,
                             line.querySelector(".text").textContent]);
"""

_LINES = """
return Array.from(document.querySelectorAll(arguments[0]),
                  (line) => line.querySelector(".text").textContent);
"""


class Page:
    """One user's chat page in one browser."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url

    def wait_for(self, condition, what: str, timeout: float = TIMEOUT) -> Any:
        """Wait until `condition()` is true (returning it), or fail saying `what`."""
        try:
            # An element the page re-rendered while it was being read: read it again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)
                                 ).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"the page never showed {what}; status: {self.status()!r}") from None

    def open(self, nick: str, *, room: str = "lobby", token: str | None = None,
             password: str | None = None, register: bool = False, connected: bool = True,
             load: bool = True) -> None:
        """Load the page (unless `load` is false: its login form is showing) and fill in
        the login form; wait until in `room` unless told not to."""
        if load:
            self.driver.get(self.url)
        fields = [("nick", nick), ("token", token or ""), ("first-room", room)]
        accounts = password is not None or register or not load  # a fresh page has neither
        if accounts:
            fields.append(("password", password or ""))
        for field, value in fields:
            element = self.driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        if accounts:
            box = self.driver.find_element(By.ID, "register")
            if box.is_displayed() and box.is_selected() != register:
                box.click()
        self.driver.find_element(By.ID, "connect").click()
        if connected:
            self.wait_for(lambda: self.state() == "connected" and self.current_room() == room,
                          f"{nick} connected, in {room}")

    def type(self, line: str) -> None:
        """Type `line` in the input and press Enter."""
        self.driver.find_element(By.ID, "say").send_keys(line, Keys.ENTER)

    def say(self, room: str, text: str) -> None:
        """Type `text` and wait until the server has echoed it back into `room`."""
        before = len(self.messages(room))
        self.type(text)
        self.wait_for(lambda: len(self.messages(room)) > before and self.messages(room)[-1][2] == text,
                      f"the echo of {text!r}")

    def state(self) -> str:
        return self.driver.find_element(By.ID, "status").get_attribute("data-state")

    def status(self) -> str:
        return self.driver.find_element(By.ID, "status").text

    def current_room(self) -> str:
        return self.driver.find_element(By.ID, "room-name").text

    def messages(self, room: str) -> list[tuple[int, str, str]]:
        """(seq, from, text) of every message shown in `room`'s log, top to bottom."""
        return [tuple(line) for line in self.driver.execute_script(_MESSAGES, room) or []]

    def lines(self, selector: str) -> list[str]:
        """The text of the lines `selector` finds (`.whisper`, `.presence`, `.notice`...)."""
        return self.driver.execute_script(_LINES, selector)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)


def seqs(page: Page, room: str) -> list[int]:
    return [seq for seq, _, _ in page.messages(room)]


def say_all(client: Client, room: str, texts: list[str]) -> None:
    """Say each text in turn, pipelined, and wait for every ok."""
    client.send(*({"op": "say", "room": room, "text": text, "id": f"say{i}"} for i, text in enumerate(texts)))
    for i in range(len(texts)):
        reply = client.reply_to(f"say{i}")
        assert reply["op"] == "ok", reply


class Chatter(threading.Thread):
    """A TCP user who says a numbered message in `room` every few milliseconds until
    stopped. A thread with a plain socket: Selenium's waits block the gevent hub."""

    def __init__(self, port: int, nick: str, room: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.room = room
        self.said: list[str] = []
        self.done = threading.Event()
        self._send({"op": "hello", "nick": nick}, {"op": "join", "room": room})

    def _send(self, *frames: dict[str, Any]) -> None:
        self.sock.sendall(b"".join(json.dumps(frame).encode() + b"\n" for frame in frames))

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.said.append(f"said during the catch-up {len(self.said) + 1}")
            self._send({"op": "say", "room": self.room, "text": self.said[-1], "id": len(self.said)})

    def stop(self) -> list[str]:
        """Stop talking; once every say is acknowledged, what was said."""
        self.done.set()
        self.join()
        self._send({"op": "ping", "id": "end"})
        acknowledged: set[int] = set()
        with self.sock.makefile("rb") as replies:
            for line in replies:
                frame = json.loads(line)
                if frame == {"op": "ok", "id": "end"}:
                    break
                if "seq" in frame and frame["op"] == "ok":
                    acknowledged.add(frame["id"])
                assert frame["op"] != "error", frame
        self.sock.close()
        assert acknowledged == set(range(1, len(self.said) + 1))
        return self.said


@pytest.fixture
def pages(fresh_drivers, web_server) -> list[Page]:
    return [Page(driver, web_server.url) for driver in fresh_drivers]


def test_two_pages_and_a_tcp_client_talk_in_a_room_and_whisper(pages, web_server):
    ann, ben = pages
    ann.open("ann", room="talk")
    ben.open("ben", room="talk")
    cal = web_server.client("cal")
    cal.join("talk")

    ann.say("talk", "hello from ann")
    ben.say("talk", "hello from ben")
    cal.request("say", room="talk", text="hello from cal")
    said = [("ann", "hello from ann"), ("ben", "hello from ben"), ("cal", "hello from cal")]
    for page in (ann, ben):
        page.wait_for(lambda page=page: [(who, text) for _, who, text in page.messages("talk")] == said,
                      "the three messages, in order")
    heard = [(f["from"], f["text"]) for f in cal.recv_until(lambda f: f.get("from") == "cal")
             if f["op"] == "msg"]
    assert heard == said

    # Presence and the member list (the room's creator is its operator).
    ann.wait_for(lambda: ann.lines(".presence") == ["— ben joined talk", "— cal joined talk"],
                 "ben's and cal's joins")
    assert ann.driver.find_element(By.ID, "member-list").text.split() == ["@ann", "ben", "cal"]

    # A whisper each way between a page and the TCP client; nobody else sees them.
    ann.type("/msg cal psst, cal")
    whisper = cal.recv_until(lambda f: f["op"] == "whisper")[-1]
    assert (whisper["from"], whisper["text"]) == ("ann", "psst, cal")
    ann.wait_for(lambda: ann.lines(".whisper.sent") == ["psst, cal"], "ann's own whisper")
    cal.request("whisper", to="ann", text="psst, ann")
    ann.wait_for(lambda: ann.lines(".whisper:not(.sent)") == ["psst, ann"], "cal's whisper")
    assert ben.lines(".whisper") == []

    # A new nick: the others see the rename, the member lists follow.
    ben.type("/nick benny")
    ann.wait_for(lambda: "— ben is now benny" in ann.lines(".presence"), "ben's rename")
    assert ann.driver.find_element(By.ID, "member-list").text.split() == ["@ann", "benny", "cal"]
    ben.wait_for(lambda: ben.status() == "connected as benny", "benny on the status line")
    assert ben.driver.find_element(By.ID, "member-list").text.split() == ["@ann", "benny", "cal"]


def test_unread_counts_room_switching_and_nick_colours(pages, web_server):
    ann = pages[0]
    ann.open("ann", room="plaza")
    cal = web_server.client("cal")
    cal.join("plaza")
    cal.request("say", room="plaza", text="first")
    ann.wait_for(lambda: seqs(ann, "plaza") == [1], "cal's first message")

    ann.type("/join side")  # now the current room: plaza's news are counted
    ann.wait_for(lambda: ann.current_room() == "side", "the switch to side")
    say_all(cal, "plaza", ["second", "third"])
    def badges() -> list[Any]:  # found afresh each time: the list may be drawn again
        return ann.driver.find_elements(By.CSS_SELECTOR, "#room-list li:first-child .unread")
    ann.wait_for(lambda: [badge.text for badge in badges()] == ["2"], "2 unread in plaza")
    assert ann.driver.title == "(2) gchat"
    room_buttons = ann.driver.find_elements(By.CSS_SELECTOR, "#room-list button.room")
    assert [button.text for button in room_buttons] == ["plaza", "side"]

    room_buttons[0].click()  # clicking a room makes it current and clears its count
    ann.wait_for(lambda: ann.current_room() == "plaza"
                 and not any(badge.is_displayed() for badge in badges()), "plaza read")
    assert ann.driver.title == "gchat"
    assert [text for _, _, text in ann.messages("plaza")] == ["first", "second", "third"]
    ann.type("/switch side")
    ann.wait_for(lambda: ann.current_room() == "side", "/switch side")

    # The same nick in another case gets the same colour.
    cal.request("quit")
    ann.type("/switch plaza")
    ann.wait_for(lambda: "— cal quit" in ann.lines(".presence"), "cal's quit")
    assert ann.driver.find_element(By.ID, "member-list").text.split() == ["@ann"]
    shouting = web_server.client("CAL")
    shouting.join("plaza")
    shouting.request("say", room="plaza", text="it is me again")
    ann.wait_for(lambda: len(ann.messages("plaza")) == 4, "CAL's message")
    colours = ann.js("""return Array.from(document.querySelectorAll('.log[data-room="plaza"] .msg .nick'),
                                          (nick) => [nick.textContent, getComputedStyle(nick).color]);""")
    assert [nick for nick, _ in colours] == ["cal", "cal", "cal", "CAL"]
    assert len({colour for _, colour in colours}) == 1

    ann.type("/rooms")  # the server's list: other tests' rooms too
    ann.wait_for(lambda: {"plaza 2 members", "side 1 member"} <= set(ann.js(_ROOM_ENTRIES)), "/rooms")
    ann.type("/leave side")
    ann.wait_for(lambda: [button.text for button in ann.driver.find_elements(
        By.CSS_SELECTOR, "#room-list button.room")] == ["plaza"], "side gone from the room list")


_ROOM_ENTRIES = """return Array.from(document.querySelectorAll('.log[data-room="plaza"] .room-entry'),
                                     (line) => line.textContent);"""


def test_history_on_join_and_older_messages_when_scrolled_to_the_top(pages, web_server):
    ann = pages[0]
    set_viewport(ann.driver, 1100, 500)  # 20 lines overflow the pane: it scrolls
    cal = web_server.client("cal")
    cal.join("archive")
    texts = [f"old message {n}" for n in range(1, 76)]
    say_all(cal, "archive", texts)

    ann.open("ann", room="archive")
    ann.wait_for(lambda: seqs(ann, "archive") == list(range(56, 76)), "the last 20 messages")
    scrolls = ann.js("""const log = document.querySelector('.log[data-room="archive"]');
                        return log.scrollHeight > log.clientHeight;""")
    assert scrolls, "the pane should overflow for this test to mean anything"

    def scroll_to_top() -> float:
        """Scroll the pane to the top; where its first message is then (before the page
        can react: the scroll event comes later)."""
        return ann.js("""const log = document.querySelector('.log[data-room="archive"]');
                         log.scrollTop = 0;
                         return log.querySelector('.msg').getBoundingClientRect().top;""")

    def top_of(seq: int) -> float:
        return ann.js(f"""return document.querySelector('.log[data-room="archive"] .msg[data-seq="{seq}"]')
                                         .getBoundingClientRect().top;""")

    where = scroll_to_top()
    ann.wait_for(lambda: seqs(ann, "archive") == list(range(6, 76)), "50 older messages")
    assert abs(top_of(56) - where) < 2, "the messages in view moved when older ones came"
    scroll_to_top()
    ann.wait_for(lambda: seqs(ann, "archive") == list(range(1, 76)), "the first 5 messages")
    assert [text for _, _, text in ann.messages("archive")] == texts
    assert [who for _, who, _ in ann.messages("archive")] == ["cal"] * 75
    older = ann.driver.find_element(By.CSS_SELECTOR, '.log[data-room="archive"] button.older')
    assert not older.is_displayed()  # nothing older is left


def test_the_page_catches_up_exactly_after_a_server_restart(fresh_drivers, tmp_path):
    http_port, store = free_port(), tmp_path / "restart.db"
    first = WebServer(http_port, store)
    second: WebServer | None = None
    try:
        cal = first.client("cal")
        cal.join("main")
        cal.join("quiet")
        say_all(cal, "main", ["before 1", "before 2", "before 3"])
        say_all(cal, "quiet", ["quiet before"])
        ann = Page(fresh_drivers[0], first.url)
        ann.open("ann", room="main")
        ann.type("/join quiet")
        ann.wait_for(lambda: ann.current_room() == "quiet", "the join of quiet")
        ann.type("/switch main")
        ann.wait_for(lambda: seqs(ann, "main") == [1, 2, 3] and seqs(ann, "quiet") == [1], "the history")
        cal.request("say", room="main", text="live 4")
        ann.wait_for(lambda: seqs(ann, "main") == [1, 2, 3, 4], "a live message")

        assert first.stop() == 0
        ann.wait_for(lambda: ann.state() == "disconnected" and "shutdown" in ann.status(),
                     "the server's bye on the status line")
        # Let the page back off to its 4 s step, so what follows is said while it is away.
        ann.wait_for(lambda: int(ann.js("return document.getElementById('status').dataset.retryMs || 0"))
                     >= 3200, "a 4 s wait before the next attempt")
        # Same port, same history; the page's 4 missing 130 is past --max-recover, so it
        # must page the gap with `history`, 100 at a time.
        second = WebServer(http_port, store, "--max-recover", "10", "--rate", "1000", "--burst", "1000")
        cal = second.client("cal")
        cal.join("main")
        cal.join("quiet")
        missed = [f"while away {n}" for n in range(5, 135)]
        say_all(cal, "main", missed)
        say_all(cal, "quiet", ["quiet 2", "quiet 3", "quiet 4"])
        assert ann.state() == "disconnected", "the page came back before the messages were said"
        # Someone keeps talking while the page comes back: what is said while it pages the
        # gap reaches it twice, live and in a `history` page, and must be shown once.
        chatter = Chatter(second.port, "dan", "main")
        chatter.start()
        ann.wait_for(lambda: ann.state() == "connected", "connected again", timeout=15)
        chatted = chatter.stop()
        cal.request("say", room="main", text="back live")
        expected = [("cal", text) for text in ["before 1", "before 2", "before 3", "live 4", *missed]]
        expected += [("dan", text) for text in chatted] + [("cal", "back live")]
        ann.wait_for(lambda: seqs(ann, "main")[-1:] == [len(expected)], "the live message after the catch-up")
        assert ann.messages("main") == [(seq, who, text) for seq, (who, text) in enumerate(expected, 1)]
        ann.wait_for(lambda: seqs(ann, "quiet") == [1, 2, 3, 4], "quiet's catch-up")
        assert [text for _, _, text in ann.messages("quiet")] == ["quiet before", "quiet 2", "quiet 3",
                                                                  "quiet 4"]
        notices = ann.lines(".notice")
        assert "disconnected (bye: shutdown, the server shut down); reconnecting" in notices
        caught_up = [int(n) for n in re.findall(r"caught up (\d+) messages in main", "\n".join(notices))]
        assert len(caught_up) == 1 and caught_up[0] >= len(missed), notices
        assert "caught up 3 messages in quiet" in ann.lines('.log[data-room="quiet"] .notice')
        assert ann.status() == "connected as ann"
    finally:
        first.kill()
        if second is not None:
            second.kill()


SCRIPT = "<script>alert(1)</script>"
IMAGE = "<img src=x onerror=alert(1)>"


def test_markup_in_messages_topics_and_whispers_is_shown_as_text(pages, web_server):
    ann = pages[0]
    cal = web_server.client("cal")
    cal.join("markup")  # the creator: an operator, who may set the topic
    cal.request("topic", room="markup", text=IMAGE)
    ann.open("ann", room="markup")
    say_all(cal, "markup", [SCRIPT, IMAGE])
    cal.request("whisper", to="ann", text=IMAGE)
    ann.say("markup", SCRIPT + " " + IMAGE)
    shown = [SCRIPT, IMAGE, SCRIPT + " " + IMAGE]
    ann.wait_for(lambda: [text for _, _, text in ann.messages("markup")] == shown, "the markup, as text")
    ann.wait_for(lambda: ann.lines(".whisper") == [IMAGE], "the whisper, as text")
    assert ann.driver.find_element(By.ID, "topic").text == IMAGE
    # A round trip after the markup arrived: an image it made would have failed by now.
    cal.request("say", room="markup", text="done")
    ann.wait_for(lambda: seqs(ann, "markup")[-1:] == [4], "the last message")
    assert ann.js("return document.querySelectorAll('#app img, #app script').length") == 0
    with pytest.raises(NoAlertPresentException):
        ann.driver.switch_to.alert  # noqa: B018 (reading it is the check)


def test_a_phone_sized_page_keeps_the_input_and_does_not_scroll_sideways(pages, web_server):
    ann = pages[0]
    set_viewport(ann.driver, 375, 800)
    ann.open("ann", room="pocket")
    cal = web_server.client("cal")
    cal.join("pocket")
    say_all(cal, "pocket", ["x" * 300, "a normal line"])
    ann.say("pocket", "typed on a phone")
    assert [text for _, _, text in ann.messages("pocket")][:2] == ["x" * 300, "a normal line"]

    def no_sideways_scroll() -> bool:
        return ann.js("""const root = document.documentElement;
                         return root.scrollWidth <= root.clientWidth
                             && document.body.scrollWidth <= document.body.clientWidth;""")

    assert no_sideways_scroll()
    field = ann.driver.find_element(By.ID, "say")
    box = ann.js("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.bottom];", field)
    assert field.is_displayed() and box[0] >= 0 and box[1] <= 375 and box[2] <= 800, box
    sidebar = ann.driver.find_element(By.ID, "sidebar")
    toggle = ann.driver.find_element(By.ID, "rooms-toggle")
    assert not sidebar.is_displayed() and toggle.is_displayed()

    ann.type("/join second")
    ann.wait_for(lambda: ann.current_room() == "second", "the second room")
    cal.request("say", room="pocket", text="news")
    badge = ann.driver.find_element(By.ID, "toggle-unread")
    ann.wait_for(lambda: badge.is_displayed() and badge.text == "1", "the unread count on the Rooms button")
    toggle.click()
    ann.wait_for(sidebar.is_displayed, "the room list")
    assert no_sideways_scroll()
    ann.driver.find_element(By.CSS_SELECTOR, "#room-list button.room").click()
    ann.wait_for(lambda: ann.current_room() == "pocket" and not sidebar.is_displayed(),
                 "pocket, the room list folded again")
    assert field.is_displayed()


def test_login_errors_are_clear_and_pings_keep_the_page_connected(fresh_drivers, tmp_path):
    server = WebServer(free_port(), tmp_path / "token.db", "--idle-timeout", "2",
                       env={"GCHAT_TOKEN": "sesame"})
    try:
        page = Page(fresh_drivers[0], server.url)

        def login_error() -> str:
            return page.driver.find_element(By.ID, "login-error").text

        page.open("zed", room="guarded", connected=False)
        page.wait_for(lambda: "token" in login_error(), "the token refusal")
        page.open("9lives", room="guarded", token="sesame", connected=False)
        page.wait_for(lambda: "not a nick" in login_error(), "the bad nick")
        holder = server.client("Taken", token="sesame")
        page.open("taken", room="guarded", token="sesame", connected=False)
        page.wait_for(lambda: "taken is taken" in login_error(), "the nick in use")
        assert page.driver.find_element(By.ID, "login").is_displayed() and page.state() == "offline"
        holder.close()

        page.open("zed", room="guarded", token="sesame")
        # The server pings after 1 s of silence and says bye after 2 s. A client that
        # arrives later and says nothing is dropped; the page, which answers, stays.
        clock = server.client("clock", token="sesame")
        assert clock.read_until_closed(timeout=5)[-1] == {"op": "bye", "reason": "idle_timeout"}
        page.say("guarded", "still here")
        assert page.state() == "connected"
        assert not [line for line in page.lines(".notice") if "disconnected" in line]
    finally:
        server.kill()


def test_a_realistic_conversation_for_the_readme_screenshot(pages, web_server, tmp_path):
    alice, bob = pages
    bob.open("bob", room="lobby")
    bob.type("/topic Release 0.2 on Friday: web page review today")
    bob.wait_for(lambda: bob.driver.find_element(By.ID, "topic").text.startswith("Release"), "the topic")
    carol = web_server.client("carol")
    carol.join("lobby")
    bob.say("lobby", "morning all")
    say_all(carol, "lobby", ["morning! coffee first, then the release notes"])
    bob.say("lobby", "the chat page landed last night: it is on port 7080")
    alice.open("alice", room="lobby")  # what was said so far comes as history

    def said(who: str, text: str) -> None:
        alice.wait_for(lambda: [line[1:] for line in alice.messages("lobby")[-1:]] == [(who, text)],
                       f"{who}: {text}")

    said("bob", "the chat page landed last night: it is on port 7080")
    say_all(carol, "lobby", ["alice, is that you in the browser?"])
    said("carol", "alice, is that you in the browser?")
    alice.say("lobby", "it is! it reconnects by itself and catches up: no gaps, no duplicates")
    bob.say("lobby", "and <b>markup</b> shows as text, as it should")
    said("bob", "and <b>markup</b> shows as text, as it should")
    dave = web_server.client("dave")
    dave.join("lobby")
    say_all(dave, "lobby", ["hi all, just got here"])
    said("dave", "hi all, just got here")
    carol.request("whisper", to="alice", text="lunch at 12:30?")
    alice.wait_for(lambda: alice.lines(".whisper") == ["lunch at 12:30?"], "carol's whisper")
    alice.type("/msg carol yes, see you there")
    alice.wait_for(lambda: len(alice.lines(".whisper")) == 2, "alice's answer")
    alice.type("/join #dev")
    alice.wait_for(lambda: alice.current_room() == "#dev", "#dev")
    alice.type("/switch lobby")
    dave.join("#dev")
    say_all(dave, "#dev", ["the build is green", "merging the web page"])
    alice.wait_for(lambda: len(alice.messages("#dev")) == 2 and alice.current_room() == "lobby",
                   "two unread in #dev")
    alice.driver.find_element(By.ID, "say").send_keys("sounds good")  # half typed
    shot = SCREENSHOT if os.environ.get("GCHAT_UPDATE_SCREENSHOT") == "1" else tmp_path / "web.png"
    assert alice.driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


_OPEN_SOCKET = """
const done = arguments[arguments.length - 1];
const socket = new WebSocket(arguments[0]);
socket.onopen = () => { socket.close(); done("open"); };
socket.onclose = event => done(`closed ${event.code}`);
"""


def test_a_page_of_another_origin_cannot_open_the_websocket(fresh_drivers, web_server, tmp_path):
    # Another site (a plain HTTP server on another port: another origin) opens a
    # WebSocket to gchat in the user's browser: the server refuses the handshake
    # (403), which the browser reports as close 1006. gchat's own page opens it.
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        driver = fresh_drivers[0]
        driver.set_script_timeout(TIMEOUT)
        target = f"ws://127.0.0.1:{web_server.http_port}/ws"
        driver.get(f"http://127.0.0.1:{elsewhere.server_address[1]}/")
        assert driver.execute_async_script(_OPEN_SOCKET, target) == "closed 1006"
        driver.get(web_server.url)
        assert driver.execute_async_script(_OPEN_SOCKET, target) == "open"
        driver.get_log("browser")  # the refused handshake is logged as an error: expected here
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()


def test_a_page_reached_by_a_dns_name_needs_the_name_listed(tmp_path):
    # DNS rebinding: any site can point a name at the server's address, so the page's
    # own origin counts only under an address or localhost, or a listed name. The
    # browser resolves chat.example to 127.0.0.1 (as a rebinding site would arrange).
    port = free_port()
    driver = start_chromium("--host-resolver-rules=MAP chat.example 127.0.0.1")
    unlisted = WebServer(port, tmp_path / "a.db")
    try:
        page = Page(driver, f"http://chat.example:{port}/")
        page.open("named", connected=False)
        page.wait_for(lambda: page.state() == "offline", "the refusal")
        assert f"--http-origins http://chat.example:{port}" in page.status()
        unlisted.kill()
        listed = WebServer(port, tmp_path / "b.db", "--http-origins", f"http://chat.example:{port}")
        try:
            page.open("named")  # connected, in lobby
        finally:
            listed.kill()
    finally:
        unlisted.kill()
        driver.quit()


def test_leaving_the_page_frees_the_nick_at_once(fresh_drivers, web_server):
    # Not kept in the back/forward cache with its WebSocket open (Cache-Control: no-store).
    page = Page(fresh_drivers[0], web_server.url)
    page.open("leaver", room="exit")
    fresh_drivers[0].get("about:blank")
    deadline = time.monotonic() + 5
    while True:
        probe = Client(("127.0.0.1", web_server.port))
        try:
            reply = probe.request("hello", nick="leaver")
        finally:
            probe.close()
        if reply["op"] == "ok":
            break
        assert time.monotonic() < deadline, f"the nick stayed taken after the page was left: {reply}"
        time.sleep(0.1)
