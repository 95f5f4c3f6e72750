"""IrcSession: the IRC door, a second front door onto the same chat state.

Strategy: the pure codec (gchat.irc.codec) turns bytes into messages; this session
maps each command onto the state's methods (register, join, leave, publish, whisper,
rename, who...) exactly as the JSON door does, and renders what the state tells it
as IRC lines. A room event is rendered once per broadcast for every IRC member
(`render`), so a room of a thousand IRC users formats a PRIVMSG once. docs/irc.md
gives each mapping decision and its reason; in short:

- room `#x` is channel `#x`, room `x` is channel `&x`; a channel an IRC user names
  is the room of that name, or else the room whose name folds to it under
  CASEMAPPING=ascii, so `#Dev` and `#dev` are one room for IRC users;
- a chat text is one PRIVMSG per line, each line split within 512 bytes on UTF-8
  boundaries; PRIVMSG to a nick is a whisper and back;
- history is not replayed on JOIN; a PING is answered once this session's earlier
  messages are delivered, so whatever it sent before reaches the others first;
- flooding is slowed (fake lag: a line waits for the rate limit's token) and cut off
  with `Excess Flood` once it has waited too long.
"""

from __future__ import annotations

import base64
import fnmatch
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent

from ..core import Once
from ..errors import BackplaneError, RequestError, StoreError
from ..irc.codec import (
    CLIENT_TAGS_MAX,
    MAX_LINE,
    BadLine,
    IrcFramer,
    Message,
    casefold_ascii,
    line,
    parse,
    render_tags,
    split_text,
    text_budget,
)
from ..protocol import valid_nick, valid_room
from .chathistory import (
    MAX_LIMIT,
    Item,
    LogSource,
    Query,
    QueryError,
    RoomSource,
    parse_query,
    select,
)
from .eventlog import dm_key, dm_position, room_key
from .events import MAX_TOPIC, ChatEvent, RoomView
from .member import ChatMember

if TYPE_CHECKING:
    from .chat import ChatServer

__all__ = ["IrcSession", "channel_of", "room_of"]

log = logging.getLogger(__name__)

VERSION = "gchat-irc-0.1"
EXCESS_FLOOD = 10.0  # seconds of fake lag owed before a flooding client is cut off
USERLEN = 16  # the longest user name kept from USER
LIST_MAX = 10_000  # the most rooms one LIST looks at
MAX_TARGETS = 4  # TARGMAX for PRIVMSG, NOTICE, TAGMSG and NAMES
WHO_MAX = 500  # the most users one WHO mask lists
MAX_MODES = 4  # the most channel mode changes one MODE line makes (ISUPPORT MODES)
# Offered capabilities (IRCv3): only those whose irctest cases pass.
CAPS = frozenset({"batch", "echo-message", "labeled-response", "message-tags", "multi-prefix",
                  "server-time", "userhost-in-names", "sasl", "draft/account-registration",
                  "draft/chathistory", "draft/event-playback", "account-tag", "account-notify",
                  "extended-join"})
CAP_VALUES = {"sasl": "PLAIN"}  # shown with CAP LS 302
SASL_CHUNK = 400  # AUTHENTICATE's chunk size (IRCv3 sasl-3.1)
SASL_MAX = 2000  # base64 characters of one PLAIN response at most: names and a password
# What changes a broadcast's bytes, and so makes a door of its own.
_RENDERING_CAPS = (("message-tags", "m"), ("server-time", "t"), ("account-tag", "a"),
                   ("extended-join", "j"))
PING_SETTLE = 0.05  # at most this long a PONG waits for the loop to read what has arrived
_BATCHES = itertools.count(1)  # batch references
_BEFORE_REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT",
                                  "AUTHENTICATE", "REGISTER"})


def channel_of(room: str) -> str:
    """The IRC channel of a room: `#x` is `#x`, `x` is `&x`."""
    return room if room.startswith("#") else "&" + room


def room_of(channel: str) -> str | None:
    """The room a channel name means (before case folding), or None if it is none."""
    if channel.startswith("#"):
        name = channel
    elif channel.startswith("&"):
        name = channel[1:]
    else:
        return None
    return name if valid_room(name) else None


def _cut(text: str) -> str:
    """A topic or kick reason cut to TOPICLEN (KICKLEN) bytes on a UTF-8 boundary."""
    return _fit(text, MAX_TOPIC)


def _fit(text: str, budget: int) -> str:
    """`text` cut to `budget` UTF-8 bytes on a code point boundary: what is left of a
    512-byte line for a topic or reason once its source and targets are in it."""
    data = text.encode()
    return text if len(data) <= budget else data[:max(0, budget)].decode(errors="ignore")


def _word(param: str) -> str:
    """`param` as a middle parameter of a reply, or "*" if it cannot be one."""
    if not param or param[0] == ":" or " " in param:
        return "*"
    return param


def _targets(param: str) -> list[str]:
    """The distinct non-empty targets of a comma list, in order (ASCII case folded)."""
    seen: dict[str, str] = {}
    for target in param.split(","):
        if target:
            seen.setdefault(casefold_ascii(target), target)
    return list(seen.values())


def _list_test(condition: str) -> Callable[[str, int], bool]:
    """One ELIST condition: `>n` or `<n` members (U), `!mask` (N), or a mask (M)."""
    count_text = condition[1:]
    if condition[:1] in (">", "<") and count_text.isascii() and count_text.isdecimal():
        count = int(count_text)
        if condition[0] == ">":
            return lambda channel, members: members > count
        return lambda channel, members: members < count
    negate = condition.startswith("!")
    pattern = re.compile(fnmatch.translate(casefold_ascii(condition.removeprefix("!"))))
    return lambda channel, members: bool(pattern.match(casefold_ascii(channel))) != negate


def _labeled(label: str, data: bytes) -> bytes:
    """`data` (one line) with the label tag added (labeled-response)."""
    tag = render_tags({"label": label})  # b"@label=... "
    return tag[:-1] + b";" + data[1:] if data.startswith(b"@") else tag + data


def _one_batch(lines: list[bytes]) -> bool:
    """Whether `lines` are one batch, start to end (a CHATHISTORY reply)."""
    first, last = parse(lines[0].rstrip(b"\r\n")), parse(lines[-1].rstrip(b"\r\n"))
    return isinstance(first, Message) and isinstance(last, Message) \
        and first.command == last.command == "BATCH" and first.params[0][:1] == "+" \
        and last.params[0] == "-" + first.params[0][1:]


def _server_time(seconds: float) -> str:
    """server-time's format: ISO 8601 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        f".{int(seconds * 1000) % 1000:03d}Z"


class IrcSession(ChatMember):
    """One IRC client (RFC 1459/2812 as modern.ircdocs.horse has it)."""

    door = "irc"

    # Class defaults, set on a session only when they change: an idle IRC session
    # should cost about what a JSON one does (docs/benchmarks.md).
    _wanted_nick: str | None = None
    _password: str | None = None
    _cap_negotiating = False
    caps: frozenset[str] = frozenset()  # what CAP REQ enabled
    _lag = 0.0  # fake lag owed, seconds
    _labeled: list[bytes] | None = None  # the reply lines of a labeled command, held
    invisible = False  # user mode +i
    _cap_302 = False  # CAP LS 302: capability values shown
    _sasl: str | None = None  # the PLAIN response so far while an exchange runs, else None

    __slots__ = ("_irc_framer", "host")

    def __init__(self, server: ChatServer) -> None:
        super().__init__(server)
        self.host = server.irc_host
        self._irc_framer = IrcFramer(max_tags=CLIENT_TAGS_MAX, max_body=MAX_LINE)

    # -- engine hooks -----------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        items = self._irc_framer.feed(data)
        if items:
            self.last_activity = monotonic()
        for item in items:
            if not self.wait_to_read():  # the JSON door's rule: replies do not pile up
                return
            if isinstance(item, BadLine):
                self._bad_line(item)
            else:
                message = parse(item)
                if isinstance(message, BadLine):
                    self._bad_line(message)
                else:
                    self._handle(message)

    def on_eof(self) -> None:
        self._await_says()
        super().on_eof()

    def send_reply(self, data: bytes) -> bool:
        if self._labeled is not None:  # labeled-response: held, labeled when complete
            self._labeled.append(data)
            return True
        return super().send_reply(data)

    # -- what the state tells this session ------------------------------------------------

    def render(self, event: ChatEvent, target: str | None = None) -> bytes:
        """The event as this door sees it; the tags follow the capabilities that make
        the door (`door`): server-time, message-tags (msgid, client-only tags)."""
        fields = event.fields
        op = fields["op"]
        tags = self._tags_for(event, fields)
        if op == "mode":
            whom = (fields["nick"],) if "nick" in fields else ()
            return render_tags(tags) + line("MODE", channel_of(fields["room"]), fields["change"],
                                            *whom, source=self._mask(fields["from"]))
        if op == "kicked":  # this session was kicked
            return self._kick_line(tags, fields, self.nick or "*")
        if op == "presence":
            who = self._mask(fields["nick"], event.user)
            kind = fields["event"]
            head = render_tags(tags)
            if kind == "join":
                return head + self._join_line(channel_of(fields["room"]), fields["nick"], who)
            if "by" in fields:
                return self._kick_line(tags, fields, fields["nick"])
            if kind == "leave":
                reason = () if event.reason is None else (event.reason,)
                return head + line("PART", channel_of(fields["room"]), *reason, source=who)
            # One QUIT or NICK per user, however many rooms they share (core.Once).
            if kind == "quit":
                text = "Quit" if event.reason is None else f"Quit: {event.reason}"
                body = line("QUIT", text, source=who)
            else:
                body = line("NICK", fields["nick"], source=self._mask(fields["old"], event.user))
            # Keyed by the occasion (one quit, one rename: the same in every room), so
            # an event that looks like an earlier one is still told.
            return Once.of(head + body, event.occasion or (event.actor, body))
        # msg, topic, TAGMSG, or a whisper: to its one recipient (or, echoed, to whom
        # it was sent)
        return self._content_lines(fields, tags, target or (
            fields["to"] if op == "tagmsg" else self.nick or "*"))

    def _content_lines(self, fields: dict[str, Any], tags: dict[str, str], to: str) -> bytes:
        """A msg, whisper, TAGMSG or topic change as IRC lines with `tags`, live or
        replayed by CHATHISTORY; `to` is a whisper's or TAGMSG's target."""
        op = fields["op"]
        if op == "tagmsg":
            return render_tags(tags) + line("TAGMSG", to, source=self._mask(fields["from"]))
        if op == "topic":
            channel, source = channel_of(fields["room"]), self._mask(fields["from"])
            return render_tags(tags) + line("TOPIC", channel, _fit(
                fields["topic"], text_budget("TOPIC", channel, source=source)), source=source)
        command = "NOTICE" if fields.get("notice") else "PRIVMSG"
        channel = channel_of(fields["room"]) if op == "msg" else to
        return self._text_lines(command, channel, fields["from"], fields["text"], tags)

    def _kick_line(self, tags: dict[str, str], fields: dict[str, Any], nick: str) -> bytes:
        channel, source = channel_of(fields["room"]), self._mask(fields["by"])
        reason = _fit(fields.get("reason") or fields["by"],
                      text_budget("KICK", f"{channel} {nick}", source=source))
        return render_tags(tags) + line("KICK", channel, nick, reason, source=source)

    def _join_line(self, channel: str, nick: str, source: str) -> bytes:
        """JOIN, with the account and real name if the client asked (extended-join);
        a user on another cluster node shows as not logged in, named by its nick."""
        if "+j" not in self.door:
            return line("JOIN", channel, source=source)
        member = self.server.find(nick)
        account = (member.account if member is not None else None) or "*"
        realname = (member.realname if member is not None else None) or nick
        return line("JOIN", channel, account, realname, source=source)

    def _tags_for(self, event: ChatEvent, fields: dict[str, Any]) -> dict[str, str]:
        tags: dict[str, str] = {}
        if "+a" in self.door and "from" in fields:  # account-tag: the sender's account
            sender = self.server.find(fields["from"])
            if sender is not None and sender.account is not None:
                tags["account"] = sender.account
        if "+t" in self.door:
            when = fields["ts"] / 1000 if "ts" in fields else event.at or time.time()
            tags["time"] = _server_time(when)
        if "+m" in self.door:
            if fields["op"] == "msg":
                tags["msgid"] = f"{fields['room']}:{fields['seq']}"
            elif event.msgid is not None:
                tags["msgid"] = event.msgid
            elif "ts" in fields and "from" in fields:
                tags["msgid"] = f"{fields['from']}:{fields['ts']}:{id(event) % 100000}"
            if event.tags:
                tags.update(event.tags)
        return tags

    def _set_door(self) -> None:
        """The door is the capabilities that change what a broadcast looks like: a
        room renders an event once per door, so members that see the same bytes share
        one rendering."""
        door = "irc" + "".join("+" + flag for cap, flag in _RENDERING_CAPS if cap in self.caps)
        if door != self.door:
            rooms = list(self.rooms.values())
            for room in rooms:
                room.leave(self)
            self.door = door
            for room in rooms:
                room.enter(self)

    def joined(self, request_id: int | str | None, room: str, view: RoomView,
               history: list[bytes], recovered: bool | None) -> None:
        channel = channel_of(room)
        self.send_reply(self._join_line(channel, self.nick or "*", self._mask(self.nick)))
        if view.topic is not None:  # no 331 on a join (modern.ircdocs.horse)
            self._topic(channel, view)
        self._names(channel, view)

    def said(self, room: str, seq: int, event: ChatEvent | None,
             request_id: int | str | None) -> None:
        """With echo-message, the client's own message comes back as the others see it."""
        if event is not None and "echo-message" in self.caps:
            self.send_reply(self.render(event))

    def say_refused(self, request_id: int | str | None, error: RequestError) -> None:
        self._numeric("404", "*", f"Cannot send to channel: {error.message}")

    def say_failed(self, request_id: int | str | None, message: str) -> None:
        self._numeric("404", "*", f"Cannot send to channel: {message}")

    def idle_ping(self) -> None:
        self.send(line("PING", self.host))

    def farewell(self, reason: str) -> bytes:
        text = {"idle_timeout": "Ping timeout", "shutdown": "Server shutting down",
                "slow_consumer": "SendQ exceeded", "quit": "Quit", "kicked": "Killed",
                "server_full": "Server is full"}.get(reason, reason)
        return line("ERROR", f"Closing Link: {text}")

    def slow_consumer_farewell(self) -> bytes:
        return self.farewell("slow_consumer")

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        label = message.tags.get("label") if "labeled-response" in self.caps else None
        if label is None:
            self._dispatch(message)
            return
        # labeled-response: every line answering this command carries the label; none
        # is an ACK, several are a batch. A say's echo is part of the answer: wait for it;
        # what earlier commands still owe is not.
        self._await_says()
        self._labeled = []
        try:
            self._dispatch(message)
            self._await_says()
        finally:
            held, self._labeled = self._labeled, None
        lines = [raw + b"\n" for data in held for raw in data.split(b"\n") if raw]
        if not lines:
            self.send_reply(_labeled(label, line("ACK", source=self.host)))
        elif len(lines) == 1 or _one_batch(lines):  # a batch already: its start is labeled
            self.send_reply(_labeled(label, lines[0]))
            self.send_reply(b"".join(lines[1:]))
        else:
            ref = f"L{next(_BATCHES)}"
            self.send_reply(_labeled(label, line("BATCH", "+" + ref, "labeled-response",
                                                 source=self.host)))
            tag = render_tags({"batch": ref})
            self.send_reply(b"".join(tag[:-1] + b";" + raw[1:] if raw.startswith(b"@")
                                     else tag + raw for raw in lines))
            self.send_reply(line("BATCH", "-" + ref, source=self.host))

    def _dispatch(self, message: Message) -> None:
        command = message.command
        if command == "PONG":
            return
        if command not in ("PRIVMSG", "NOTICE"):
            self._await_says()  # PING included: what it sent before reaches others first
            if not self.is_open:
                return
        if not self._fake_lag():
            return
        handler = _COMMANDS.get(command)
        if handler is None:
            if self.nick is not None:
                self._numeric("421", command, "Unknown command")
            return
        if self.nick is None and command not in _BEFORE_REGISTRATION:
            self._numeric("451", "You have not registered")
            return
        try:
            if command in ("PRIVMSG", "NOTICE", "TAGMSG"):
                handler(self, message.params, client_tags={
                    key: value for key, value in message.tags.items() if key.startswith("+")
                } if "message-tags" in self.caps else None)
            else:
                handler(self, message.params)
        except RequestError as exc:
            log.debug("session %d: %s: %s", self.session_id, command, exc)
        except (StoreError, BackplaneError) as exc:  # why goes to the log, not the client
            log.debug("session %d: %s: %s", self.session_id, command, exc)
            self.send_reply(line("FAIL", command, "TEMPORARILY_UNAVAILABLE",
                                 "The server cannot reach its store; try again later",
                                 source=self.host))
        except Exception:
            log.exception("session %d: %s failed", self.session_id, command)

    def _fake_lag(self) -> bool:
        """Fake lag: a line waits for its token of the rate limit (the client is slowed,
        not refused); one owing more than EXCESS_FLOOD seconds is cut off."""
        if self.bucket.take(monotonic()):
            self._lag = max(0.0, self._lag - 1 / self.bucket.rate)
            return True
        wait = 1 / self.bucket.rate
        self._lag += wait
        self.server.metrics.rate_limited.labels("irc").inc()
        if self._lag > EXCESS_FLOOD:
            self.close("flood", line("ERROR", "Closing Link: Excess Flood"))
            return False
        gevent.sleep(wait)
        self.bucket.take(monotonic())
        return self.is_open

    def _bad_line(self, bad: BadLine) -> None:
        if bad.reason == "too_long":
            self._numeric("417", "Input line was too long")
        elif bad.reason == "invalid_utf8":
            self.send_reply(line("FAIL", bad.command or "*", "INVALID_UTF8",
                                 "Message rejected, your IRC software MUST use UTF-8",
                                 source=self.host))

    # -- replies --------------------------------------------------------------------------

    def _numeric(self, code: str, *params: str) -> None:
        # Words a client sent (a channel, a nick, a command) may not be valid middle
        # parameters (empty, a space, a leading ":"): they are shown as "*".
        *middle, last = params
        self.send_reply(line(code, self.nick or "*", *map(_word, middle), last,
                             source=self.host))

    def _mask(self, nick: str | None, user: str | None = None) -> str:
        """`nick!user@host`: the user is what USER gave (the nick for other doors, or
        for a user this node does not hold); the host is the server name."""
        if user is None:
            user = self._user_of(self.server.find(nick) if nick else None, nick)
        return f"{nick}!{user}@{self.host}"

    @staticmethod
    def _user_of(member: ChatMember | None, nick: str | None) -> str:
        return (member.username if member is not None and member.username else None) \
            or nick or "*"

    def _text_lines(self, command: str, target: str, sender: str, text: str,
                    tags: dict[str, str] | None = None) -> bytes:
        source = self._mask(sender)
        budget = text_budget(command, target, source=source)
        head = render_tags(tags) if tags else b""
        return b"".join(head + f":{source} {command} {target} :{piece}\r\n".encode()
                        for piece in split_text(text, budget))

    def _names(self, channel: str, view: RoomView, end: bool = True) -> None:
        chunk: list[str] = []
        full = "userhost-in-names" in self.caps
        prefix = self._prefixes(view)
        for nick in view.members:
            chunk.append(prefix(nick) + (self._mask(nick) if full else nick))
            if len(chunk) == 20:
                self._numeric("353", "=", channel, " ".join(chunk))
                chunk = []
        if chunk:
            self._numeric("353", "=", channel, " ".join(chunk))
        if end:
            self._numeric("366", channel, "End of /NAMES list")

    def _prefixes(self, view: RoomView) -> Callable[[str], str]:
        """A member's prefixes in NAMES and WHO: `@` (operator), `+` (voiced); only the
        highest unless the client asked for multi-prefix."""
        ops, voiced, every = set(view.ops), set(view.voiced), "multi-prefix" in self.caps

        def prefix(nick: str) -> str:
            marks = ("@" if nick in ops else "") + ("+" if nick in voiced else "")
            return marks if every else marks[:1]
        return prefix

    def _room(self, channel: str) -> str | None:
        """The room `channel` names for an IRC user: that room, or the one whose
        name folds to it (CASEMAPPING=ascii), or a new room of that name."""
        name = room_of(channel)
        if name is None:
            return None
        joined = self._joined_folded(name)
        if joined is not None:
            return joined
        return self.server.find_folded(name) or name

    def _joined_folded(self, name: str) -> str | None:
        if name in self.rooms:
            return name
        folded = casefold_ascii(name)
        return next((room for room in self.rooms if casefold_ascii(room) == folded), None)

    # -- registration ---------------------------------------------------------------------

    def irc_cap(self, params: tuple[str, ...]) -> None:
        sub = params[0].upper() if params else ""
        who = self.nick or "*"
        if sub == "LS":
            self._cap_negotiating = self.nick is None
            if len(params) > 1 and params[1].isdecimal() and int(params[1]) >= 302:
                self._cap_302 = True
            offered = " ".join(cap + ("=" + CAP_VALUES[cap] if self._cap_302 and cap in CAP_VALUES
                                      else "") for cap in sorted(self._offered()))
            self.send_reply(line("CAP", who, "LS", offered, source=self.host))
        elif sub == "LIST":
            self.send_reply(line("CAP", who, "LIST", " ".join(sorted(self.caps)), source=self.host))
        elif sub == "REQ":
            self._cap_negotiating = self.nick is None
            wanted = params[1] if len(params) > 1 else ""
            # All or nothing (IRCv3 capability negotiation), "-cap" to remove one.
            asked = wanted.split()
            available = self._offered()
            if asked and all(cap.removeprefix("-") in available for cap in asked):
                caps = set(self.caps)
                for cap in asked:
                    if cap.startswith("-"):
                        caps.discard(cap[1:])
                    else:
                        caps.add(cap)
                self.caps = frozenset(caps)
                self._set_door()
                self.send_reply(line("CAP", who, "ACK", wanted, source=self.host))
            else:
                self.send_reply(line("CAP", who, "NAK", wanted, source=self.host))
        elif sub == "END":
            self._cap_negotiating = False
            self._try_register()
        else:
            self._numeric("410", sub or "*", "Invalid CAP command")

    # -- accounts (accounts.py): SASL PLAIN, PASS, REGISTER -----------------------------------

    def irc_authenticate(self, params: tuple[str, ...]) -> None:
        """SASL PLAIN (IRCv3 sasl-3.1/3.2), before registration or after it (to log in
        again, as another account if need be)."""
        if not params or not params[0]:
            self._numeric("461", "AUTHENTICATE", "Not enough parameters")
            return
        data = params[0]
        if data == "*":
            self._sasl_abort()
            return
        if self._sasl is None:  # a new exchange: `data` is the mechanism
            if self.server.settings.token is not None and self.nick is None:
                try:  # a server with a token checks it before any password
                    self.server.check_token(self._password)
                except RequestError:
                    self._numeric("904", "SASL authentication failed: send PASS with the "
                                  "server's token first")
                    return
            if data.upper() != "PLAIN" or "sasl" not in self.caps:
                self._numeric("908", "PLAIN", "are available SASL mechanisms")
                self._numeric("904", "SASL authentication failed")
            else:
                self._sasl = ""
                self.send_reply(line("AUTHENTICATE", "+", source=self.host))
            return
        if len(data) > SASL_CHUNK:
            self._sasl = None
            self._numeric("905", "SASL message too long")
            return
        if data != "+":
            self._sasl += data
        if len(self._sasl) > SASL_MAX:
            self._sasl = None
            self._numeric("904", "SASL authentication failed: the response is too long")
            return
        if len(data) == SASL_CHUNK:
            return  # more follows (a last chunk of exactly 400 is followed by "+")
        response, self._sasl = self._sasl, None
        self._sasl_plain(response)

    def _sasl_plain(self, response: str) -> None:
        try:
            authzid, authcid, password = (
                part.decode() for part in base64.b64decode(response, validate=True).split(b"\0"))
        except ValueError:  # not base64, not three parts, not UTF-8
            self._numeric("904", "SASL authentication failed")
            return
        if not authcid or not password or (authzid and casefold_ascii(authzid)
                                           != casefold_ascii(authcid)):
            self._numeric("904", "SASL authentication failed")
            return
        try:
            if not self.login(authcid, password):
                return
        except RequestError as exc:
            self._numeric("904", f"SASL authentication failed: {exc.message}")
            return
        except (StoreError, BackplaneError):
            self._numeric("904", "SASL authentication failed: accounts are unavailable; "
                          "try again later")
            return
        nick = self.nick or self._wanted_nick or "*"  # the NICK sent so far, if any
        self._numeric("900", f"{nick}!{self.username or nick}@{self.host}", self.account or "*",
                      f"You are now logged in as {self.account}")
        self._numeric("903", "SASL authentication successful")

    def account_notify(self, member: ChatMember) -> None:
        if "account-notify" in self.caps and member.nick is not None:
            self.send(line("ACCOUNT", member.account or "*", source=self._mask(member.nick)))

    def _sasl_abort(self) -> None:
        self._sasl = None
        self._numeric("906", "SASL authentication aborted")

    def irc_register(self, params: tuple[str, ...]) -> None:
        """draft/account-registration: REGISTER <account> <email> <password>; the
        account is the nick (`*`), once connected."""
        if len(params) < 3:
            self._numeric("461", "REGISTER", "Not enough parameters")
            return
        name, password = params[0], params[2]
        if self.nick is None:
            self._fail("REGISTER", "COMPLETE_CONNECTION_REQUIRED", name,
                       text="Register once connected")
            return
        if name != "*" and casefold_ascii(name) != casefold_ascii(self.nick):
            self._fail("REGISTER", "ACCOUNT_NAME_MUST_BE_NICK", name,
                       text="The account is your nick: REGISTER * * PASSWORD")
            return
        codes = {"account_exists": "ACCOUNT_EXISTS", "weak_password": "WEAK_PASSWORD",
                 "registration_closed": "DISALLOWED", "too_many_attempts": "TEMPORARILY_UNAVAILABLE"}
        try:
            account = self.server.accounts.register(self.nick, password, self.address)
        except RequestError as exc:
            self._fail("REGISTER", codes.get(exc.code, "BAD_ACCOUNT_NAME" if exc.code == "bad_args"
                                                else "DISALLOWED"), self.nick, text=exc.message)
            return
        if not self.is_open:
            return
        self.set_account(account)
        self.send_reply(line("REGISTER", "SUCCESS", account.name, "Account created",
                             source=self.host))
        self._numeric("900", self._mask(self.nick), account.name,
                      f"You are now logged in as {account.name}")

    def _fail(self, command: str, code: str, *context: str, text: str) -> None:
        self.send_reply(line("FAIL", command, code, *map(_word, context), text,
                             source=self.host))

    def _offered(self) -> frozenset[str]:
        """CAPS, less what accounts would offer when the server has none (or lets
        only operators register)."""
        registration = self.server.settings.registration
        if registration == "off":
            return CAPS - {"sasl", "draft/account-registration"}
        return CAPS - {"draft/account-registration"} if registration == "closed" else CAPS

    def irc_pass(self, params: tuple[str, ...]) -> None:
        if self.nick is not None:
            self._numeric("462", "You may not reregister")
        elif not params:
            self._numeric("461", "PASS", "Not enough parameters")
        else:
            self._password = params[0]

    def irc_nick(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self._numeric("431", "No nickname given")
            return
        nick = params[0]
        if not valid_nick(nick):
            self._numeric("432", nick, "Erroneous nickname")
            return
        if self.nick is None:
            self._wanted_nick = nick
            self._try_register()
            return
        if nick == self.nick:
            return
        old = self.nick
        try:
            self.server.rename(self, nick)
        except RequestError as exc:
            if exc.code == "nick_taken":
                self._numeric("433", nick, "Nickname is already in use")
            elif exc.code == "account_required":
                self._numeric("433", nick, "Nickname is reserved by a different account")
            return
        if self.is_open:
            self.send_reply(line("NICK", nick, source=f"{old}!{self.username or old}@{self.host}"))

    def irc_user(self, params: tuple[str, ...]) -> None:
        if self.nick is not None:
            self._numeric("462", "You may not reregister")
        elif len(params) < 4 or not params[0] or not params[3]:
            self._numeric("461", "USER", "Not enough parameters")
        else:
            self.username = params[0][:USERLEN]
            self.realname = params[3]
            self._try_register()

    def _try_register(self) -> None:
        if self.nick is not None or self._cap_negotiating or not self.username \
                or not self._wanted_nick:
            return
        if self._sasl is not None:  # registering ends an unfinished exchange (sasl-3.1)
            self._sasl_abort()
        nick = self._wanted_nick
        if self.server.settings.token is not None:
            if not self._check_token():
                return
        elif self._password is not None and self.account is None:
            # PASS as the password of the nick's account (or PASS ACCOUNT:PASSWORD), for
            # clients without SASL; ignored when it names no account.
            password, self._password = self._password, None
            name: str | None
            name, colon, rest = password.partition(":")
            accounts = self.server.accounts
            if colon and valid_nick(name) and accounts.registered(name):
                password = rest
            elif accounts.registered(nick):
                name = nick
            else:
                name = None  # no account named: a guest
            try:
                if name is not None and not self.login(name, password):
                    return
            except RequestError as exc:
                self._numeric("464", f"Password incorrect: {exc.message}")
                self.close("unauthorized", line("ERROR", "Closing Link: Bad password"))
                return
        try:
            self.server.register(self, nick)
        except RequestError as exc:
            if exc.code == "nick_taken":
                self._numeric("433", nick, "Nickname is already in use")
            elif exc.code == "account_required":
                self._numeric("433", nick, "Nickname is reserved by a different account: "
                              "log in with SASL or PASS")
            else:
                self.close("server_full", self.farewell("server_full"))
            return
        if self.nick is None:
            return  # it ended meanwhile
        self._welcome()

    def _check_token(self) -> bool:
        try:
            self.server.check_token(self._password)
        except RequestError:
            self._numeric("464", "Password incorrect")
            self.close("unauthorized", line("ERROR", "Closing Link: Bad password"))
            return False
        return True

    def _welcome(self) -> None:
        settings = self.server.settings
        name = self.host
        self._numeric("001", f"Welcome to the gchat IRC network {self._mask(self.nick)}")
        self._numeric("002", f"Your host is {name}, running version {VERSION}")
        self._numeric("003", "This server was created with gchat")
        self._numeric("004", name, VERSION, "i", "mnotv", "ov")
        tokens = ["CASEMAPPING=ascii", "CHANTYPES=#&", "NICKLEN=32", "CHANNELLEN=65",
                  f"LINELEN={MAX_LINE}", "UTF8ONLY", "NETWORK=gchat", "CHANMODES=,,,mnt",
                  f"MAXCHANNELS={settings.max_rooms}", f"CHANLIMIT=#&:{settings.max_rooms}",
                  "PREFIX=(ov)@+", f"MODES={MAX_MODES}", f"USERLEN={USERLEN}",
                  f"TOPICLEN={MAX_TOPIC}", f"KICKLEN={MAX_TOPIC}",
                  f"TARGMAX=JOIN:,PART:,NAMES:{MAX_TARGETS},WHOIS:1,KICK:{MAX_TARGETS},"
                  f"PRIVMSG:{MAX_TARGETS},"
                  f"NOTICE:{MAX_TARGETS},TAGMSG:{MAX_TARGETS}", "ELIST=MNU",
                  f"CHATHISTORY={MAX_LIMIT}", "MSGREFTYPES=msgid,timestamp"]
        for start in range(0, len(tokens), 12):  # 15 parameters at most per line
            self._numeric("005", *tokens[start:start + 12], "are supported by this server")
        self._numeric("422", "MOTD File is missing")

    # -- commands -------------------------------------------------------------------------

    def irc_ping(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("409", "No origin specified")
            return
        # What others sent before this PING comes before its PONG: let the loop read
        # every connection that is readable now (their says are submitted; at most a
        # moment, on a busy server), then wait for the says submitted so far to be
        # delivered.
        with gevent.Timeout(PING_SETTLE, False):  # type: ignore[arg-type]  # False: silent
            gevent.idle()
        self.server.wait_for_says()
        if self.is_open:
            self.send_reply(line("PONG", self.host, params[0], source=self.host))

    def irc_quit(self, params: tuple[str, ...]) -> None:
        self.quit_reason = params[0] if params and params[0] else None
        self.close("quit", line("ERROR", f"Closing Link: {self.quit_reason or 'Quit'}"))

    def irc_join(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("461", "JOIN", "Not enough parameters")
            return
        if params[0] == "0":
            for room in list(self.rooms):
                self._part(room, None)
            return
        limit = self.server.settings.max_rooms
        for channel in self._each_target(params[0]):
            name = room_of(channel)
            if name is None:
                self._numeric("479", channel, "Illegal channel name")
                continue
            if self._joined_folded(name) is not None:
                continue  # IRC: joining a channel one is in changes nothing
            if len(self.rooms) >= limit:
                self._numeric("405", channel, "You have joined too many channels")
                continue
            self.server.join(self, name, None, None, fold=True)  # the state folds the name

    def irc_part(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("461", "PART", "Not enough parameters")
            return
        reason = params[1] if len(params) > 1 and params[1] else None
        for channel in self._each_target(params[0]):
            name = room_of(channel)
            joined = self._joined_folded(name) if name is not None else None
            if joined is None:
                self._numeric("442" if name is not None else "403", channel,
                              "You're not on that channel")
                continue
            self._part(joined, reason)

    def _part(self, room: str, reason: str | None) -> None:
        chat_room = self.rooms.get(room)
        if chat_room is None:
            return
        self.server.leave(self, chat_room, "leave", reason)
        self.rooms.pop(room, None)
        if self.is_open:
            extra = () if reason is None else (reason,)
            self.send_reply(line("PART", channel_of(room), *extra, source=self._mask(self.nick)))

    def irc_privmsg(self, params: tuple[str, ...], notice: bool = False,
                    client_tags: dict[str, str] | None = None) -> None:
        command = "NOTICE" if notice else "PRIVMSG"
        if not params:
            if not notice:
                self._numeric("411", f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self._numeric("412", "No text to send")
            return
        text = params[1]
        size = len(text.encode())
        for target in self._each_target(params[0], MAX_TARGETS, quiet=notice):
            if target[:1] in ("#", "&"):
                joined = self._channel_joined(target, notice)
                if joined is None:
                    continue
                if size > text_budget(command, channel_of(joined), source=self._mask(self.nick)):
                    # Relayed with its source it would pass 512 bytes (modern: 417).
                    self._numeric("417", "Input line was too long")
                    continue
                try:
                    self._says = self.server.publish(self.rooms[joined], self, text, None,
                                                     notice, client_tags or None)
                except RequestError:  # moderated (+m)
                    if not notice:
                        self._numeric("404", channel_of(joined), "Cannot send to channel (+m)")
            else:
                if size > text_budget(command, target, source=self._mask(self.nick)):
                    self._numeric("417", "Input line was too long")
                    continue
                self._await_says()
                try:
                    whisper = self.server.whisper(self, target, text, notice, client_tags or None)
                except RequestError:
                    if not notice:
                        self._numeric("401", target, "No such nick/channel")
                    continue
                if "echo-message" in self.caps:
                    recipient = self.server.find(target)
                    self.send_reply(self.render(whisper, recipient.nick if recipient else target))

    def irc_notice(self, params: tuple[str, ...],
                   client_tags: dict[str, str] | None = None) -> None:
        self.irc_privmsg(params, notice=True, client_tags=client_tags)

    def irc_tagmsg(self, params: tuple[str, ...],
                   client_tags: dict[str, str] | None = None) -> None:
        """message-tags: only tags, relayed to the IRC users who accept tags; not a
        gchat message (no text, not stored, no seq)."""
        if not params:
            self._numeric("461", "TAGMSG", "Not enough parameters")
            return
        # +draft/persist: kept for chathistory (replayed with draft/event-playback).
        persist = bool(client_tags) and "+draft/persist" in client_tags  # type: ignore[operator]
        for target in self._each_target(params[0], MAX_TARGETS):
            fields: dict[str, Any] = {"op": "tagmsg", "from": self.nick, "to": target,
                                      "ts": int(time.time() * 1000)}
            if persist:
                fields["tags"] = client_tags
            event = ChatEvent.of(fields)
            event.tags = client_tags or None
            if target[:1] in ("#", "&"):
                joined = self._channel_joined(target, False)
                if joined is None:
                    continue
                if persist:
                    self.server.log_room_event(self.rooms[joined], event)
                rendered: dict[str, bytes] = {}
                for member in list(self.rooms[joined].members.values()):
                    if member is not self and isinstance(member, IrcSession) \
                            and "message-tags" in member.caps:
                        data = rendered.get(member.door)
                        if data is None:
                            data = rendered[member.door] = member.render(
                                event, channel_of(joined))
                        member.send(data)
                echo_target = channel_of(joined)
            else:
                recipient = self.server.find(target)
                if recipient is None:
                    self._numeric("401", target, "No such nick/channel")
                    continue
                if persist:
                    position = dm_position(fields["ts"])
                    event.msgid = f"~{position}"
                    self.server.log_whisper(event, position, recipient.nick or target, self,
                                            recipient)
                if isinstance(recipient, IrcSession) and "message-tags" in recipient.caps:
                    recipient.send(recipient.render(event, target))
                echo_target = target
            if "echo-message" in self.caps:
                self.send_reply(self.render(event, echo_target))

    def _each_target(self, targets: str, limit: int | None = None,
                     quiet: bool = False) -> Iterator[str]:
        """The distinct targets of a comma list, each after the first costing a token of
        the rate limit (one line must not fan out for free); more than `limit` is 407
        ERR_TOOMANYTARGETS (TARGMAX) and none at all, answered unless `quiet`."""
        distinct = _targets(targets)
        if limit is not None and len(distinct) > limit:
            if not quiet:
                self._numeric("407", targets[:64], f"Too many targets (at most {limit})")
            return
        for index, target in enumerate(distinct):
            if index and not (self.is_open and self._fake_lag()):
                return  # it ended (a join on a cluster blocks), or flooded
            yield target

    def _channel_joined(self, channel: str, quiet: bool) -> str | None:
        """The joined room `channel` names, or None (and 404 unless `quiet`)."""
        name = room_of(channel)
        joined = self._joined_folded(name) if name is not None else None
        if joined is None and not quiet:
            self._numeric("404", channel, "Cannot send to channel")
        return joined

    def irc_names(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("366", "*", "End of /NAMES list")
            return
        channels = _targets(params[0])[:MAX_TARGETS]
        several = len(channels) > 1  # then one 366 ends them all (RFC 2812)
        for channel in channels:
            name = self._room(channel)
            if name is not None and self.server.room_exists(name):
                self._names(channel_of(name), self.server.who(name), end=not several)
            elif not several:
                self._numeric("366", channel, "End of /NAMES list")
        if several:
            self._numeric("366", params[0], "End of /NAMES list")

    def irc_who(self, params: tuple[str, ...]) -> None:
        mask = params[0] if params else "*"
        if mask[:1] in ("#", "&"):
            name = self._room(mask)
            if name is not None and self.server.room_exists(name):
                channel = channel_of(name)
                view = self.server.who(name)
                prefix = self._prefixes(view)
                for nick in view.members:
                    self._who_line(channel, nick, self.server.find(nick), prefix(nick))
        else:
            pattern = re.compile(fnmatch.translate(casefold_ascii(mask)))
            found = 0
            for member in list(self.server.nicks.values()):
                if member.nick is not None and pattern.match(casefold_ascii(member.nick)):
                    self._who_line("*", member.nick, member)
                    found += 1
                    if found == WHO_MAX:  # a mask of "*" on a full server: bounded
                        break
        self._numeric("315", mask, "End of WHO list")

    def _who_line(self, channel: str, nick: str, member: ChatMember | None,
                  prefix: str = "") -> None:
        """352 RPL_WHOREPLY: <channel> <user> <host> <server> <nick> <H|G>[@+] :0 <realname>."""
        away = member is not None and member.away
        realname = (member.realname if member is not None else None) or nick
        self._numeric("352", channel, self._user_of(member, nick), self.host, self.host, nick,
                      ("G" if away else "H") + prefix, f"0 {realname}")

    def irc_whois(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("431", "No nickname given")
            return
        target = params[-1]
        member = self.server.find(target)
        if member is None or member.nick is None:
            self._numeric("401", target, "No such nick/channel")
        else:
            nick = member.nick
            self._numeric("311", nick, self._user_of(member, nick), self.host, "*",
                          member.realname or nick)
            self._numeric("312", nick, self.host, "gchat")
            if member.account is not None:
                self._numeric("330", nick, member.account, "is logged in as")
            if member.away:
                self._numeric("301", nick, member.away)
        self._numeric("318", target, "End of /WHOIS list")

    def irc_list(self, params: tuple[str, ...]) -> None:
        """LIST, with the ELIST=MNU filters: masks, `!mask`, `>n` and `<n` members.
        Rooms are read a page at a time, yielding between pages, and at most
        LIST_MAX of them, so a LIST costs the loop what one `rooms` page does."""
        tests = [_list_test(condition) for condition in params[0].split(",")] \
            if params and params[0] else []
        self._numeric("321", "Channel", "Users  Name")
        after, seen, more = None, 0, True
        while more and seen < LIST_MAX:
            rooms, more = self.server.room_list(after, 1000)
            for room in rooms:
                channel = channel_of(room["room"])
                if all(test(channel, room["members"]) for test in tests):
                    self._numeric("322", channel, str(room["members"]), "")
            seen += len(rooms)
            after = rooms[-1]["room"] if rooms else None
            if more:
                gevent.sleep(0)
        self._numeric("323", "End of /LIST")

    def irc_topic(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("461", "TOPIC", "Not enough parameters")
            return
        name = self._room(params[0])
        if name is None or not self.server.room_exists(name):
            self._numeric("403", params[0], "No such channel")
            return
        channel = channel_of(name)
        if len(params) == 1:
            view = self.server.who(name)
            if view.topic is None:
                self._numeric("331", channel, "No topic is set")
            else:
                self._topic(channel, view)
            return
        joined = self._joined_folded(name)
        if joined is None:
            self._numeric("442", channel, "You're not on that channel")
            return
        try:  # too long is cut at TOPICLEN, as IRC servers do (docs/irc.md)
            self.server.set_topic(self, self.rooms[joined], _cut(params[1]))
        except RequestError as exc:
            self._refused(channel, exc)

    def _topic(self, channel: str, view: RoomView) -> None:
        assert view.topic is not None
        self._numeric("332", channel, _fit(view.topic.text, text_budget(
            "332", f"{self.nick or '*'} {channel}", source=self.host)))
        self._numeric("333", channel, view.topic.by, str(view.topic.ts // 1000))

    def _refused(self, channel: str, exc: RequestError, nick: str = "*") -> None:
        """An operator's action the state refused, as its IRC numeric."""
        if exc.code == "no_such_nick":
            self._numeric("441", nick, channel, "They aren't on that channel")
        elif exc.code == "not_operator":
            self._numeric("482", channel, "You're not channel operator")
        else:
            self._numeric("482", channel, exc.message)

    def irc_kick(self, params: tuple[str, ...]) -> None:
        if len(params) < 2:
            self._numeric("461", "KICK", "Not enough parameters")
            return
        name = room_of(params[0])
        joined = self._joined_folded(name) if name is not None else None
        if joined is None:
            exists = name is not None and self.server.room_exists(self._room(params[0]) or name)
            self._numeric("442" if exists else "403", params[0],
                          "You're not on that channel" if exists else "No such channel")
            return
        reason = _cut(params[2]) if len(params) > 2 and params[2] else None
        for nick in self._each_target(params[1], MAX_TARGETS):
            room = self.rooms.get(joined)
            if room is None:
                return  # it kicked itself
            try:
                self.server.kick(self, room, nick, reason)
            except RequestError as exc:
                self._refused(channel_of(joined), exc, nick)
                if exc.code != "no_such_nick":
                    return

    def irc_mode(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric("461", "MODE", "Not enough parameters")
            return
        target = params[0]
        if target[:1] in ("#", "&"):
            name = self._room(target)
            if name is None or not self.server.room_exists(name):
                self._numeric("403", target, "No such channel")
            elif len(params) == 1:
                view = self.server.who(name)
                self._numeric("324", channel_of(name), "+" + "m" * view.moderated + "n"
                              + "t" * view.topic_locked)
            elif params[1].lstrip("+") in ("b", "e", "I") and len(params) == 2:
                # A list query (clients ask for the ban list on join): gchat keeps none.
                end = {"b": ("368", "ban"), "e": ("349", "exception"), "I": ("347", "invite")}
                code, what = end[params[1].lstrip("+")]
                self._numeric(code, channel_of(name), f"End of channel {what} list")
            else:
                self._channel_modes(name, params[1], list(params[2:]))
        elif casefold_ascii(target) != casefold_ascii(self.nick or ""):
            self._numeric("502", "Can't change mode for other users")
        elif len(params) == 1:
            self._numeric("221", "+i" if self.invisible else "+")
        elif params[1] in ("+i", "-i"):
            # Invisible: what clients ask for by default (irssi does); gchat hides no one
            # from WHO anyway, so the flag is kept and shown, nothing more.
            self.invisible = params[1] == "+i"
            self.send_reply(line("MODE", self.nick or "*", params[1], source=self._mask(self.nick)))
        else:
            self._numeric("501", "Unknown MODE flag")

    def _channel_modes(self, name: str, modes: str, args: list[str]) -> None:
        """Channel mode changes: +o/-o and +v/-v NICK, +t/-t and +m/-m, at most
        MAX_MODES of them (one line must not fan out into hundreds of broadcasts); +n
        is always on."""
        channel = channel_of(name)
        joined = self._joined_folded(name)
        if joined is None:
            self._numeric("442", channel, "You're not on that channel")
            return
        sign, changes = "+", 0
        for char in modes:
            if char in "+-":
                sign = char
                continue
            if changes == MAX_MODES or joined not in self.rooms:
                return
            changes += 1
            if char == "n":
                continue
            if char not in "ovtm":
                self._numeric("472", char, "is an unknown mode char to me")
                continue
            nick = None
            if char in "ov":
                if not args:
                    self._numeric("461", "MODE", "Not enough parameters")
                    continue
                nick = args.pop(0)
            try:
                self.server.set_mode(self, self.rooms[joined], sign + char, nick)
            except RequestError as exc:
                self._refused(channel, exc, nick or "*")
                if exc.code != "no_such_nick":
                    return

    # -- chathistory (IRCv3 draft/chathistory; chathistory.py selects) --------------------

    def irc_chathistory(self, params: tuple[str, ...]) -> None:
        try:
            query = parse_query(params)
            if query.sub == "TARGETS":
                self._history_targets(query)
                return
            items = select(self._history_source(query), query)
        except QueryError as exc:
            self._fail("CHATHISTORY", exc.code, *exc.context, text=exc.message)
            return
        ref = f"H{next(_BATCHES)}"
        self.send_reply(line("BATCH", "+" + ref, "chathistory", query.target, source=self.host))
        self.send_reply(b"".join(self._history_lines(item, ref) for item in items))
        self.send_reply(line("BATCH", "-" + ref, source=self.host))

    def _history_source(self, query: Query) -> RoomSource | LogSource:
        target, events = query.target, "draft/event-playback" in self.caps
        if target[:1] in ("#", "&"):
            name = room_of(target)
            joined = self._joined_folded(name) if name is not None else None
            if joined is None:
                raise QueryError("INVALID_TARGET", (query.sub, target),
                                 "You are not on that channel")
            return RoomSource(self.server, self.server.event_log() if events else None, joined,
                              room_key(joined))
        if not valid_nick(target):
            raise QueryError("INVALID_TARGET", (query.sub, target), "No such nick or channel")
        # Private messages are kept for accounts only: a guest has none.
        owner = self.account_id or ""
        return LogSource(self.server.event_log(), dm_key(owner, target) if owner else "", events)

    def _history_lines(self, item: Item, ref: str) -> bytes:
        fields = item.fields
        tags = {"batch": ref}
        if "+t" in self.door:
            tags["time"] = _server_time(item.ts / 1000)
        if "+m" in self.door:
            tags["msgid"] = item.msgid
            tags.update(fields.get("tags") or {})
        return self._content_lines(fields, tags, fields.get("to", ""))

    def _history_targets(self, query: Query) -> None:
        """CHATHISTORY TARGETS: the joined channels and private peers whose latest
        message falls between the two timestamps, earliest first."""
        (_, first), (_, second) = query.refs
        low, high = min(first, second), max(first, second)
        found: list[tuple[int, str]] = []
        for room in list(self.rooms):
            latest = self.server.history(room, None, None, 1)
            if latest:
                found.append((ChatEvent(latest[0]).fields["ts"], channel_of(room)))
        if self.account_id is not None:
            found += [(ts, peer) for peer, ts in
                      self.server.event_log().log_peers(self.account_id)]
        chosen = sorted(item for item in found if low < item[0] < high)[:query.limit]
        ref = f"H{next(_BATCHES)}"
        self.send_reply(line("BATCH", "+" + ref, "draft/chathistory-targets", source=self.host))
        tag = render_tags({"batch": ref})
        self.send_reply(b"".join(tag + line("CHATHISTORY", "TARGETS", target,
                                            _server_time(ts / 1000), source=self.host)
                                 for ts, target in chosen))
        self.send_reply(line("BATCH", "-" + ref, source=self.host))

    def irc_away(self, params: tuple[str, ...]) -> None:
        if params and params[0]:
            self.away = params[0]
            self._numeric("306", "You have been marked as being away")
        else:
            self.away = None
            self._numeric("305", "You are no longer marked as being away")


_COMMANDS: dict[str, Any] = {
    name[4:].upper(): getattr(IrcSession, name)
    for name in dir(IrcSession) if name.startswith("irc_")
}
