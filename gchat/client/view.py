"""How the client shows things: formatted lines (pure), and three Views that print
them: the interactive terminal (prompt_toolkit), plain text, and JSON lines."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from typing import Any, TextIO

__all__ = ["JsonView", "PlainView", "TerminalView", "format_event", "nick_style"]

# Styles a nick can get: a stable choice per nick, so everyone keeps their colour.
_NICK_STYLES = ["ansired", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan",
                "ansibrightred", "ansibrightgreen", "ansibrightblue", "ansibrightmagenta"]

Fragments = list[tuple[str, str]]  # (style, text), as prompt_toolkit's FormattedText


def nick_style(nick: str) -> str:
    """The colour of `nick`: the same in every run and for every case of the nick."""
    return _NICK_STYLES[zlib.crc32(nick.lower().encode()) % len(_NICK_STYLES)]


def _clock(ts_ms: int | None = None) -> str:
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000 if ts_ms else None))


def format_event(frame: dict[str, Any], *, current: str | None, me: str | None = None) -> Fragments:
    """A server event as styled fragments: time, then who and what."""
    op = frame.get("op")
    room = frame.get("room")
    where: Fragments = [("ansibrightblack", f"[{room}] ")] if room and room != current else []
    if op == "msg":
        sender = str(frame.get("from"))
        style = nick_style(sender) + (" bold" if sender == me else "")
        return [("ansibrightblack", _clock(frame.get("ts")) + " "), *where,
                (style, f"<{sender}>"), ("", " " + str(frame.get("text")))]
    if op == "whisper":
        sender = str(frame.get("from"))
        return [("ansibrightblack", _clock(frame.get("ts")) + " "), ("ansimagenta", f"*{sender}*"),
                ("", " " + str(frame.get("text")))]
    if op == "presence":
        nick, event = frame.get("nick"), frame.get("event")
        what = {"join": f"{nick} joined {room}", "leave": f"{nick} left {room}",
                "quit": f"{nick} quit", "rename": f"{frame.get('old')} is now {nick}"}.get(
                    str(event), f"{nick}: {event}")
        if frame.get("by"):
            why = f": {frame['reason']}" if frame.get("reason") else ""
            what = f"{nick} was kicked from {room} by {frame['by']}{why}"
        return [("ansibrightblack", f"{_clock()} -- {what}")]
    if op == "topic":
        topic = frame.get("topic")
        what = f"{frame.get('from')} set the topic of {room}: {topic}" if topic else \
            f"{frame.get('from')} cleared the topic of {room}"
        return [("ansibrightblack", f"{_clock(frame.get('ts'))} -- {what}")]
    if op == "mode":
        whom = f" {frame['nick']}" if frame.get("nick") else ""
        return [("ansibrightblack",
                 f"{_clock(frame.get('ts'))} -- {frame.get('from')} set {room} "
                 f"{frame.get('change')}{whom}")]
    if op == "kicked":
        why = f": {frame['reason']}" if frame.get("reason") else ""
        return [("ansired", f"{_clock()} -- you were kicked from {room} by {frame.get('by')}{why}")]
    return [("", json.dumps(frame, ensure_ascii=False))]


def format_result(command: str, reply: dict[str, Any], *, current: str | None) -> list[Fragments]:
    """The answer to /rooms, /who or /history, as lines."""
    if command == "rooms":
        rooms = reply.get("rooms", [])
        if not rooms:
            return [[("", "no rooms yet: /join one")]]
        lines = [[("", f"{r['room']:<24} {r['members']} member{'s' * (r['members'] != 1)}")]
                 for r in rooms]
        if reply.get("more"):
            lines.append([("ansibrightblack", f"more rooms: /rooms {rooms[-1]['room']}")])
        return lines
    if command == "who":
        ops = set(reply.get("ops", []))
        members = [("@" if nick in ops else "") + nick for nick in reply.get("members", [])]
        names = ", ".join(members) if members else "nobody"
        return [[("", f"in {reply.get('room')}: {names}")]]
    if command == "topic":
        topic = reply.get("topic")
        what = f"{topic['text']} (set by {topic['by']})" if topic else "no topic"
        return [[("", f"topic of {reply.get('room')}: {what}")]]
    messages = reply.get("messages", [])
    if not messages:
        return [[("", f"no messages in {reply.get('room')}")]]
    return [format_event(m, current=current) for m in messages]


def _text(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)


class PlainView:
    """Plain lines for a pipe: events and results on stdout, notices on stderr."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out, self.err = out, err
        self.me: str | None = None

    def _line(self, stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    def event(self, frame: dict[str, Any], *, current: str | None) -> None:
        self._line(self.out, _text(format_event(frame, current=None, me=self.me)))

    def result(self, command: str, reply: dict[str, Any]) -> None:
        for line in format_result(command, reply, current=None):
            self._line(self.out, _text(line))

    def sent_whisper(self, to: str, text: str) -> None:
        self._line(self.out, f"{_clock()} -> *{to}* {text}")

    def notice(self, text: str) -> None:
        self._line(self.err, text)

    def error(self, text: str) -> None:
        self._line(self.err, f"error: {text}")

    def room_changed(self, room: str | None) -> None:
        pass


class JsonView(PlainView):
    """For scripts: every server event, and every query's reply, as one JSON line."""

    def event(self, frame: dict[str, Any], *, current: str | None) -> None:
        self._line(self.out, json.dumps(frame, ensure_ascii=False))

    def result(self, command: str, reply: dict[str, Any]) -> None:
        self._line(self.out, json.dumps(reply, ensure_ascii=False))

    def sent_whisper(self, to: str, text: str) -> None:
        pass  # the server sends the sender no event for it


class TerminalView:
    """The interactive terminal: lines printed above the prompt, which keeps whatever
    the user is typing. Called from greenlets; prompt_toolkit runs in the asyncio loop
    of the main greenlet, so each line is handed to that loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.me: str | None = None
        self.current: str | None = None

    def _print(self, fragments: Fragments) -> None:
        from prompt_toolkit import print_formatted_text
        from prompt_toolkit.formatted_text import FormattedText

        self.loop.call_soon_threadsafe(print_formatted_text, FormattedText(fragments))

    def event(self, frame: dict[str, Any], *, current: str | None) -> None:
        self._print(format_event(frame, current=current, me=self.me))

    def result(self, command: str, reply: dict[str, Any]) -> None:
        for line in format_result(command, reply, current=self.current):
            self._print(line)

    def sent_whisper(self, to: str, text: str) -> None:
        self._print([("ansibrightblack", f"{_clock()} "), ("ansimagenta", f"-> *{to}*"), ("", f" {text}")])

    def notice(self, text: str) -> None:
        for line in text.splitlines():
            self._print([("ansiyellow", line)])

    def error(self, text: str) -> None:
        self._print([("ansired", f"error: {text}")])

    def room_changed(self, room: str | None) -> None:
        self.current = room

    def prompt(self) -> Fragments:
        """The prompt: the current room."""
        return [("bold", f"[{self.current or 'no room'}]"), ("", " > ")]
