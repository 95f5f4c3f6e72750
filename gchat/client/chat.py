"""ChatClient: what the terminal client does, whatever shows it.

Strategy: the client keeps, per joined room, the seq of the last message it showed. A
`msg` with a seq not above it is a duplicate and is dropped; every other one is shown
and moves it on. While a join is in flight (the first one, or a rejoin after a
reconnect) the room's live messages are held back; the join's history (and, when the
server could not recover the whole gap, `history after=<last seq>` pages) and the held
messages are then shown in seq order: no duplicate, no gap, and the user is told how
many messages were caught up.

When the connection drops (anything but /quit), the client says so, reconnects with
exponential backoff (0.5 s doubling to 10 s, with jitter), registers the same nick
(logged in again with the password it holds, if any) and rejoins its rooms. A refused
password is not retried: the client says so and stops. Output goes to a View
(view.py), so the same logic serves the interactive terminal, plain text and JSON lines.

Accounts (docs/protocol.md, proto 2): `--password` logs in as the account of the nick;
/register, /password and /drop are the ops of the same names. The password is kept in
memory only, for reconnecting, and is never shown or logged.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Sequence
from typing import Any, Protocol

import gevent
from gevent.event import Event

from ..core import Connector
from ..errors import ConnectError
from ..protocol import nick_key
from .commands import HELP, Command, explain, parse
from .connection import ClientSession, RequestFailed

__all__ = ["ChatClient", "View"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
PAGE = 100  # the largest `history` page (PROTOCOL.md 4)
PROTO = 2  # hello's proto: accounts (docs/protocol.md)
# A hello refused with these will be refused again: stop reconnecting.
REFUSED_FOR_GOOD = ("account_required", "bad_password")


class View(Protocol):
    """Where the client's output goes."""

    def event(self, frame: dict[str, Any], *, current: str | None) -> None:
        """A server event to show: msg (live or history), whisper, presence."""

    def result(self, command: str, reply: dict[str, Any]) -> None:
        """The answer to a query command (/rooms, /who, /history)."""

    def sent_whisper(self, to: str, text: str) -> None:
        """The user's own whisper, which the server does not echo."""

    def notice(self, text: str) -> None:
        """Something the client wants the user to know."""

    def error(self, text: str) -> None:
        """A command that failed, in plain words with a hint."""

    def room_changed(self, room: str | None) -> None:
        """The current room changed (the prompt shows it)."""


class ChatClient:
    """One user's connection to a gchat server, kept alive across server restarts."""

    def __init__(self, host: str, port: int, nick: str, view: View, *, token: str | None = None,
                 password: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 reconnect: bool = True, fallbacks: Sequence[tuple[str, int]] = ()) -> None:
        self.host, self.port = host, port
        self.nick = nick
        self.view = view
        self.token = token
        # (account, its password) for every (re)connection as that nick; never shown
        self._login = (nick, password) if password is not None else None
        self.account: str | None = None  # the account this session is logged in as
        self.reconnect = reconnect
        # Other nodes of the same cluster, tried in turn when this one cannot be reached.
        self.connectors = [Connector(h, p, lambda: ClientSession(self._on_event), timeout=10,
                                     ssl_context=ssl_context)
                           for h, p in [(host, port), *fallbacks]]
        self.session: ClientSession | None = None
        self.rooms: dict[str, int | None] = {}  # joined room -> seq of the last msg shown
        self.current: str | None = None
        self.failures = 0  # commands the server refused (the exit status of a script)
        self.closed = Event()  # set by /quit or close(): no more reconnecting
        self.online = Event()  # connected and registered
        self._held: dict[str, list[dict[str, Any]]] = {}
        self._bye: str | None = None
        self._history_on_join = 20

    # -- connection ------------------------------------------------------------------------

    def start(self, room: str | None) -> None:
        """Connect and join `room` (made current); ConnectError or RequestFailed if the
        server cannot be reached or refuses the nick. A refused room is only shown."""
        self.connect()
        if room:
            self.run(f"/join {room}")

    def wait_online(self, timeout: float) -> bool:
        """Wait until the client is connected (it may be reconnecting); False at once
        if it stopped for good."""
        gevent.wait([self.online, self.closed], timeout=timeout, count=1)
        return self.online.is_set()

    def connect(self) -> None:
        """Connect, register and (re)join every room; ConnectError or RequestFailed."""
        self._bye = None
        session = self._connect_any()
        try:
            fields: dict[str, Any] = {"nick": self.nick}
            if self.token is not None:
                fields["token"] = self.token
            # After a /nick away from the account's nick, a reconnection is a guest's.
            # A guest's hello stays v1's, so servers that speak only proto 1 take it.
            if self._login is not None and nick_key(self.nick) == nick_key(self._login[0]):
                fields["password"] = self._login[1]
                fields["proto"] = PROTO
            hello = session.request("hello", **fields)
        except RequestFailed:
            session.disconnect("refused")
            raise
        self._history_on_join = hello.get("limits", {}).get("history_on_join", 20)
        first = self.session is None
        self.account = hello.get("account")
        self.session = session
        if first and self.account:
            self.view.notice(f"logged in as {self.account}")
        for room in list(self.rooms):
            self._join(room)
        self.online.set()
        gevent.spawn(self._watch, session)

    def _connect_any(self) -> ClientSession:
        """A connection to the current server, or else to the next that answers."""
        failure: ConnectError | None = None
        for _ in range(len(self.connectors)):
            connector = self.connectors[0]
            try:
                session = connector.connect()
            except ConnectError as exc:
                failure = exc
                self.connectors.append(self.connectors.pop(0))  # the next one, next time
                continue
            assert isinstance(session, ClientSession)
            self.host, self.port = connector.host, connector.port
            return session
        assert failure is not None
        raise failure

    def _watch(self, session: ClientSession) -> None:
        session.gone.wait()
        if self.closed.is_set() or session is not self.session:
            return
        self.online.clear()
        why = f"the server said {self._bye}" if self._bye else f"{session.disconnect_reason or 'closed'}"
        if not self.reconnect:
            self.view.error(f"connection lost ({why})")
            self.closed.set()
            return
        self.view.notice(f"connection lost ({why}); reconnecting")
        self._reconnect()

    def _reconnect(self) -> None:
        delay = 0.5
        while not self.closed.is_set():
            if self.closed.wait(delay * random.uniform(0.8, 1.2)):
                return
            try:
                self.connect()
            except (ConnectError, RequestFailed) as exc:
                if isinstance(exc, RequestFailed) and exc.code in REFUSED_FOR_GOOD:
                    why = explain(exc, Command("hello", (self.nick,)), self)
                    self.view.error(f"cannot reconnect: {why}")
                    self.closed.set()
                    return
                delay = min(delay * 2, MAX_BACKOFF)
                self.view.notice(f"reconnect failed ({exc}); next try in {delay:g} s")
                continue
            self.view.notice(f"reconnected to {self.host}:{self.port}")
            return

    def close(self) -> None:
        """Quit politely (bye), stop reconnecting."""
        self.closed.set()
        session = self.session
        if session is not None and session.is_open:
            try:
                session.request("quit", timeout=5)
            except RequestFailed:
                pass
            session.wait_closed(5)
            session.disconnect("quit")

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "msg":
            room = frame.get("room")
            if room in self._held:
                self._held[room].append(frame)
            elif room in self.rooms:
                self._show_msgs(room, [frame])
        elif op in ("whisper", "presence", "topic", "mode"):
            self.view.event(frame, current=self.current)
        elif op == "kicked":
            self.view.event(frame, current=self.current)
            self._left(str(frame.get("room")))
        elif op == "bye":
            self._bye = frame.get("reason")

    def _show_msgs(self, room: str, frames: list[dict[str, Any]]) -> int:
        """Show the msgs of `room` newer than the last shown, in seq order; how many."""
        shown = 0
        for frame in sorted(frames, key=lambda f: f.get("seq", 0)):
            last = self.rooms.get(room)
            if last is not None and frame["seq"] <= last:
                continue  # seen already
            self.rooms[room] = frame["seq"]
            self.view.event(frame, current=self.current)
            shown += 1
        return shown

    def _join(self, room: str) -> None:
        """Join (or rejoin) `room` and show what was missed since its last seq."""
        assert self.session is not None
        last = self.rooms.get(room)
        self._held[room] = []
        try:
            fields: dict[str, Any] = {"room": room}
            if last is not None:
                fields["after"] = last
            reply = self.session.request("join", **fields)
            history = reply.get("history", [])
            if last is not None and not reply.get("recovered", False):
                history = self._page_after(room, last)
            rejoin = room in self.rooms
            if not rejoin and reply.get("topic"):
                self.view.result("topic", reply)
            if not rejoin:
                # A first join shows the recent history. With no history, the room has no
                # messages, unless the server shows none on join: then we cannot know.
                if history:
                    self.rooms[room] = history[0]["seq"] - 1
                else:
                    self.rooms[room] = 0 if self._history_on_join > 0 else None
            caught_up = self._show_msgs(room, history)
            self._show_msgs(room, self._held.pop(room))  # live ones, newer than the history
            if rejoin and caught_up:
                self.view.notice(f"caught up {caught_up} message{'s' * (caught_up != 1)} in {room}")
        finally:
            self._held.pop(room, None)

    def _page_after(self, room: str, last: int) -> list[dict[str, Any]]:
        """Every stored message of `room` after seq `last`, page by page."""
        assert self.session is not None
        messages: list[dict[str, Any]] = []
        while True:
            after = messages[-1]["seq"] if messages else last
            page = self.session.request("history", room=room, after=after, limit=PAGE)["messages"]
            messages += page
            if len(page) < PAGE:
                return messages

    # -- commands ---------------------------------------------------------------------------

    def run(self, line: str) -> bool:
        """Carry out one line the user typed; False if it failed (the view says why)."""
        command = parse(line)
        if command is None:
            return True
        if command.error:
            self.view.error(command.error)
            return False
        try:
            self._run(command)
        except RequestFailed as exc:
            self.failures += 1
            self.view.error(explain(exc, command, self))
            return False
        return True

    def _run(self, command: Command) -> None:
        name, args = command.name, command.args
        if name == "help":
            self.view.notice(HELP)
            return
        if name == "quit":
            self.close()
            return
        session = self.session
        if session is None or not session.is_open:
            raise RequestFailed(name, "disconnected", "not connected")
        if name == "say":
            if self.current is None:
                raise RequestFailed("say", "no_room", "")
            session.request("say", room=self.current, text=args[0])
        elif name == "join":
            self._join(args[0])
            self._switch(args[0])
        elif name == "leave":
            room = args[0] if args else self.current
            if room is None:
                raise RequestFailed("leave", "no_room", "")
            session.request("leave", room=room)
            self._left(room)
        elif name == "switch":
            if args[0] not in self.rooms:
                raise RequestFailed("switch", "not_in_room", "")
            self._switch(args[0])
        elif name == "msg":
            session.request("whisper", to=args[0], text=args[1])
            self.view.sent_whisper(args[0], args[1])
        elif name == "nick":
            self.nick = session.request("nick", nick=args[0])["nick"]
            self.view.notice(f"you are now {self.nick}")
        elif name == "register":
            self.account = session.request("register", password=args[0])["account"]
            self._login = (self.account, args[0])  # a reconnection logs in with it
            self.view.notice(f"registered {self.account}: from now on only its password "
                             "logs in as it (next time, connect with --password or GCHAT_PASSWORD)")
        elif name == "password":
            account = session.request("password", password=args[0], new_password=args[1])["account"]
            self._login = (account, args[1])
            self.view.notice(f"changed the password of {account}")
        elif name == "drop":
            account = session.request("drop", password=args[0])["account"]
            self.account = self._login = None
            self.view.notice(f"deleted the account {account}: the nick is anyone's again")
        elif name == "rooms":
            # The server pages rooms (docs/protocol.md): AFTER shows the next page.
            fields: dict[str, Any] = {"after": args[0]} if args else {}
            self.view.result("rooms", session.request("rooms", **fields))
        elif name == "who":
            room = args[0] if args else self.current
            if room is None:
                raise RequestFailed("who", "no_room", "")
            self.view.result("who", session.request("who", room=room))
        elif name == "history":
            if self.current is None:
                raise RequestFailed("history", "no_room", "")
            limit = int(args[0]) if args else 20
            self.view.result("history", session.request("history", room=self.current, limit=limit))
        else:  # topic, kick, mode: in the current room
            if self.current is None:
                raise RequestFailed(name, "no_room", "")
            if name == "topic":
                fields = {"text": args[0]} if args else {}
                self.view.result("topic", session.request("topic", room=self.current, **fields))
            elif name == "kick":
                fields = {"reason": args[1]} if len(args) > 1 else {}
                session.request("kick", room=self.current, nick=args[0], **fields)
            else:
                fields = {"nick": args[1]} if len(args) > 1 else {}
                session.request("mode", room=self.current, change=args[0], **fields)

    def _left(self, room: str) -> None:
        self.rooms.pop(room, None)
        if room == self.current:
            self._switch(next(iter(self.rooms), None))

    def _switch(self, room: str | None) -> None:
        self.current = room
        self.view.room_changed(room)
