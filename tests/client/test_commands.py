"""What the user types, parsed (pure), and how events look (pure)."""

from __future__ import annotations

import pytest

from gchat.client.commands import Command, parse, secret_start
from gchat.client.view import format_event, format_result, nick_style


@pytest.mark.parametrize(("line", "expected"), [
    ("hello", Command("say", ("hello",))),
    ("  spaced  out ", Command("say", ("  spaced  out ",))),
    ("//slash at the start", Command("say", ("/slash at the start",))),
    ("/join #dev", Command("join", ("#dev",))),
    ("/JOIN lobby", Command("join", ("lobby",))),
    ("/leave", Command("leave", ())),
    ("/msg bob hi there, bob", Command("msg", ("bob", "hi there, bob"))),
    ("/who", Command("who", ())),
    ("/history 5", Command("history", ("5",))),
    ("/quit\n", Command("quit", ())),
    ("/topic  a topic, with  spaces ", Command("topic", ("a topic, with  spaces",))),
    ("/topic", Command("topic", ())),
    ("/kick bob too loud", Command("kick", ("bob", "too loud"))),
    ("/mode +o bob", Command("mode", ("+o", "bob"))),
    ("/mode -t", Command("mode", ("-t",))),
    ("/register  a long pass phrase ", Command("register", ("a long pass phrase",))),
    ("/password old new and long", Command("password", ("old", "new and long"))),
    ("/DROP my pass", Command("drop", ("my pass",))),
])
def test_lines_become_commands(line, expected):
    assert parse(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "\n"])
def test_blank_lines_do_nothing(line):
    assert parse(line) is None


@pytest.mark.parametrize(("line", "error"), [
    ("/frobnicate", "there is no command /frobnicate: type /help for the list"),
    ("/join", "usage: /join ROOM"),
    ("/join a b", "usage: /join ROOM"),
    ("/msg bob", "usage: /msg NICK TEXT"),
    ("/history many", "usage: /history [N], N from 1 to 100"),
    ("/history 500", "usage: /history [N], N from 1 to 100"),
    ("/rooms now then", "usage: /rooms [AFTER]"),
    ("/mode +t bob", "usage: /mode +o|-o NICK or /mode +t|-t"),
    ("/mode +o", "usage: /mode +o|-o NICK or /mode +t|-t"),
    ("/kick", "usage: /kick NICK [WHY]"),
    ("/register", "usage: /register PASSWORD"),
    ("/password onlyone", "usage: /password OLD NEW"),
    ("/drop   ", "usage: /drop PASSWORD"),
])
def test_mistakes_are_explained(line, error):
    assert parse(line).error == error


def test_passwords_are_found_to_be_masked_and_kept_out_of_reprs():
    assert secret_start("/register sesame") == len("/register ")
    assert secret_start("/Password  old new") == len("/Password  ")
    assert secret_start("/drop x") == len("/drop ")
    for line in ("/registered x", "/register", "hello /register x", "/join #dev", ""):
        assert secret_start(line) is None
    assert "sesame" not in repr(parse("/register sesame"))


def test_a_nick_keeps_its_colour_whatever_its_case():
    assert nick_style("Alice") == nick_style("alice")
    assert len({nick_style(f"user{i}") for i in range(50)}) > 5


def test_events_read_as_chat_lines():
    msg = {"op": "msg", "room": "#dev", "from": "bob", "text": "hi", "seq": 3, "ts": 0}
    text = "".join(t for _, t in format_event(msg, current="#dev"))
    assert text.endswith("<bob> hi") and "#dev" not in text
    assert "[#dev]" in "".join(t for _, t in format_event(msg, current="lobby"))
    presence = {"op": "presence", "room": "#dev", "nick": "bob", "event": "rename", "old": "bobby"}
    assert "bobby is now bob" in "".join(t for _, t in format_event(presence, current=None))
    assert "dim" not in str(format_event(presence, current=None))  # presence is grey, not styled text
    rooms = format_result("rooms", {"rooms": [{"room": "lobby", "members": 1}]}, current=None)
    assert "".join(t for _, t in rooms[0]).split() == ["lobby", "1", "member"]
    paged = format_result("rooms", {"rooms": [{"room": "b", "members": 0}], "more": True}, current=None)
    assert "".join(t for _, t in paged[-1]) == "more rooms: /rooms b"


def test_topics_modes_and_kicks_read_as_lines():
    def text(frame):
        return "".join(t for _, t in format_event(frame, current="#dev"))
    assert text({"op": "topic", "room": "#dev", "topic": "ship", "from": "amy", "ts": 0}).endswith(
        "amy set the topic of #dev: ship")
    assert text({"op": "topic", "room": "#dev", "topic": "", "from": "amy"}).endswith(
        "amy cleared the topic of #dev")
    assert text({"op": "mode", "room": "#dev", "change": "+o", "nick": "bo", "from": "amy"}).endswith(
        "amy set #dev +o bo")
    assert text({"op": "kicked", "room": "#dev", "by": "amy", "reason": "spam"}).endswith(
        "you were kicked from #dev by amy: spam")
    assert text({"op": "presence", "room": "#dev", "nick": "bo", "event": "leave", "by": "amy"}).endswith(
        "bo was kicked from #dev by amy")
    who = format_result("who", {"room": "#dev", "members": ["amy", "bo"], "ops": ["amy"]}, current=None)
    assert "".join(t for _, t in who[0]) == "in #dev: @amy, bo"
