"""ChatSession: one client of the chat server, speaking PROTOCOL.md on the engine Session.

Strategy: `on_recv` decodes a line and walks the error precedence of PROTOCOL.md
section 2 in order: bad_frame, rate_limited, unknown_op, not_registered /
already_registered, then the op's handler. Each handler checks its fields in the same
order (bad_args, then values, then state) and raises RequestError, which becomes the
one `{"op":"error"}` reply here. No handler blocks between assigning a seq and the
last enqueue of its events, so every member sees a room's events in one order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..errors import BackplaneError, RequestError, StoreError
from ..protocol import (
    BadFrame,
    Request,
    bye,
    decode_request,
    encode,
    encode_with_items,
    is_integer,
    valid_nick,
    valid_room,
)
from .accounts import check_password
from .events import MAX_TOPIC, ChatEvent, RoomView
from .member import ChatMember

if TYPE_CHECKING:
    from .chat import ChatRoom

__all__ = ["ChatSession"]

log = logging.getLogger(__name__)

PROTO = 1
ACCOUNTS_PROTO = 2  # hello's proto 2: accounts (docs/protocol.md); 1 still works unchanged
_BEFORE_HELLO = frozenset({"hello", "ping", "pong", "quit"})
_OPS_IN_HUB = frozenset({"say", "ping", "pong"})  # never block: see on_recv_nowait
_PING = encode({"op": "ping"})
ROOMS_PAGE = 1000  # the most rooms in one `rooms` reply
MODE_CHANGES = frozenset({"+o", "-o", "+v", "-v", "+t", "-t", "+m", "-m"})


def _bad_args(message: str) -> RequestError:
    return RequestError("bad_args", message)


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise _bad_args(f'"{name}" is required')
    if not isinstance(value, str):
        raise _bad_args(f'"{name}" must be a string')
    return value


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad_args(f'"{name}" must be a string')
    return value


def _text(body: dict[str, Any]) -> str:
    text = _string(body, "text")
    if not text:
        raise _bad_args('"text" must not be empty')
    return text


def _optional_seq(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and not (is_integer(value) and value >= 0):
        raise _bad_args(f'"{name}" must be a non-negative integer')
    return value


def _one_line(name: str, text: str) -> str:
    """A topic or kick reason: one line of at most MAX_TOPIC UTF-8 bytes (IRC's)."""
    if any(char in text for char in "\r\n\0"):
        raise _bad_args(f'"{name}" must be one line')
    if len(text.encode()) > MAX_TOPIC:
        raise RequestError("text_too_long", f'"{name}" may be at most {MAX_TOPIC} bytes of UTF-8')
    return text


def _view_fields(view: RoomView) -> dict[str, Any]:
    """The extension fields of a join's or who's ok: operators, topic, modes."""
    fields: dict[str, Any] = {"ops": view.ops, "voiced": view.voiced,
                              "topic_locked": view.topic_locked, "moderated": view.moderated}
    if view.topic is not None:
        fields["topic"] = view.topic.fields()
    return fields


def _check_nick(nick: str) -> None:
    if not valid_nick(nick):
        raise RequestError("invalid_nick", f"{nick[:80]!r} is not a valid nick: a letter, "
                           "then up to 31 letters, digits, _ or -")


def _check_room(name: str) -> None:
    if not valid_room(name):
        raise RequestError("invalid_room", f"{name[:80]!r} is not a valid room name")


class ChatSession(ChatMember):
    """The JSON door: a connection speaking PROTOCOL.md, every op."""

    door = "json"  # PROTOCOL.md's JSON lines
    __slots__ = ()

    # -- engine hooks ---------------------------------------------------------------

    def on_recv(self, line: bytes) -> None:
        if not self.wait_to_read():  # replies are outside the bound: see wait_to_read
            return
        self._handle(decode_request(line))

    def on_recv_nowait(self, line: bytes) -> bool:
        # In the hub, where nothing may block: a chatty client's says and pings (and
        # bad frames) are answered here. Whatever may wait goes to on_recv: a request
        # when the queue is past its mark (wait_to_read); while its says are not all
        # answered, any request but a say that will be accepted (every reply, an
        # error to a say included, waits for them: _await_says, _error); and the ops
        # that may use the store or the cluster.
        if self.queued_bytes >= self.high_water_bytes:
            return False
        says = self._says
        if says is not None and says.done.is_set():
            self._says = says = None  # answered already: nothing to wait for
        request = decode_request(line)
        if says is not None:
            if not (isinstance(request, Request) and request.op == "say") or self._say_refused(request):
                return False
        elif isinstance(request, Request) and request.op not in _OPS_IN_HUB:
            return False
        self._handle(request)
        return True

    def _say_refused(self, request: Request) -> bool:
        """Whether `_handle` would answer this say with an error; changes nothing."""
        if not request.id_ok or self.nick is None or not self.bucket.has_token(monotonic()):
            return True
        try:
            room, _ = self._say_args(request.body)
        except RequestError:
            return True
        return not room.may_speak(self.session_id)

    def _handle(self, request: Request | BadFrame) -> None:
        if self._says is not None and not (isinstance(request, Request) and request.op == "say"):
            self._await_says()  # replies and effects in request order (PROTOCOL.md 6.1)
            if not self.is_open:
                # It ended while waiting (its own says made it a slow consumer, say):
                # its rooms and nick are already given back, so the request is a no-op.
                return
        if isinstance(request, BadFrame):
            self.bucket.take(monotonic())  # PROTOCOL.md 2: bad frames take a token too
            self._error(request.id, "bad_frame", request.reason)
            return
        op = request.op
        if op == "pong":
            return  # never answered, whatever it holds (PROTOCOL.md 7)
        request_id = request.id
        if not self.bucket.take(monotonic()):
            self._error(request_id, "rate_limited", "too many requests: slow down")
            return
        handler = _HANDLERS.get(op)
        if handler is None:
            self._error(request_id, "unknown_op", f"unknown op {op[:64]!r}")
            return
        if self.nick is None and op not in _BEFORE_HELLO:
            self._error(request_id, "not_registered", "say hello first")
            return
        if self.nick is not None and op == "hello":
            self._error(request_id, "already_registered", f"already registered as {self.nick}")
            return
        if not request.id_ok:
            self._error(None, "bad_args", '"id" must be an integer below 2^53 in magnitude '
                        "or a string of at most 64 characters")
            return
        try:
            handler(self, request)
        except RequestError as exc:
            self._error(request_id, exc.code, exc.message)
        except StoreError:
            # An extension code: the store failed (the server logged why); nothing was done.
            self._error(request_id, "unavailable", "history is unavailable; try again later")
        except BackplaneError:
            # The same extension code in a cluster: Redis is unreachable (logged).
            self._error(request_id, "unavailable",
                        "the cluster is unavailable; the request was not carried out, try again")
        except Exception:
            log.exception("session %d: %s failed", self.session_id, op)
            self._error(request_id, "internal_error", "the server failed to handle this request")

    def on_eof(self) -> None:
        self._await_says()  # a half-closed client still gets a reply to every request
        super().on_eof()

    def on_frame_too_large(self) -> None:
        self._await_says()  # requests before the oversize frame are answered first
        limit = self.limits.max_frame
        self.send_reply(encode({"op": "error", "id": None, "code": "frame_too_large",
                          "message": f"a frame may be at most {limit} bytes"}))
        self.close("frame_too_large", bye("frame_too_large"))

    def render(self, event: ChatEvent) -> bytes:
        return event.json

    # -- what the chat state tells this session (each door renders it its own way) ---

    def joined(self, request_id: int | str | None, room: str, view: RoomView,
               history: list[bytes], recovered: bool | None) -> None:
        """It is in `room` (or was already): the join's ok (PROTOCOL.md 4), with the
        operators and topic (an extension, docs/protocol.md)."""
        fields: dict[str, Any] = {"op": "ok", "id": request_id, "room": room,
                                  "members": view.members, **_view_fields(view)}
        if recovered is not None:
            fields["recovered"] = recovered
        self.send_reply(encode_with_items(fields, "history", history))

    def said(self, room: str, seq: int, event: ChatEvent | None,
             request_id: int | str | None) -> None:
        """Its say is stored and delivered to the others: the `msg` (unless `event` is
        None: it reached this session already), then the `ok` (PROTOCOL.md 7)."""
        if event is not None:
            self.send(self.render(event))
        self.send_reply(encode({"op": "ok", "id": request_id, "room": room, "seq": seq}))

    def say_refused(self, request_id: int | str | None, error: RequestError) -> None:
        # Not _error: that waits for this session's says, and this is one of them.
        self.server.metrics.errors.labels(error.code).inc()
        self.send_reply(encode({"op": "error", "id": request_id, "code": error.code,
                                "message": error.message}))

    def say_failed(self, request_id: int | str | None, message: str) -> None:
        """Its say was not stored: an extension code, `unavailable`."""
        self.send_reply(encode({"op": "error", "id": request_id, "code": "unavailable",
                                "message": message}))

    def idle_ping(self) -> None:
        self.send(_PING)

    def farewell(self, reason: str) -> bytes:
        return bye(reason)

    def slow_consumer_farewell(self) -> bytes:
        return bye("slow_consumer")

    # -- replies ------------------------------------------------------------------------

    def _ok(self, request_id: int | str | None, **fields: Any) -> None:
        self.send_reply(encode({"op": "ok", "id": request_id, **fields}))

    def _error(self, request_id: int | str | None, code: str, message: str) -> None:
        self.server.metrics.errors.labels(code).inc()
        if code == "rate_limited":
            self.server.metrics.rate_limited.labels(self.door).inc()
        self._await_says()
        self.send_reply(encode({"op": "error", "id": request_id, "code": code, "message": message}))

    def _joined(self, name: str) -> ChatRoom:
        room = self.rooms.get(name)
        if room is None:
            raise RequestError("not_in_room", f"you are not in {name}")
        return room

    def _existing_room(self, name: str) -> str:
        _check_room(name)
        if not self.server.room_exists(name):
            raise RequestError("no_such_room", f"there is no room {name}")
        return name

    # -- ops ------------------------------------------------------------------------------

    def op_hello(self, request: Request) -> None:
        body = request.body
        nick = _string(body, "nick")
        proto = body.get("proto")
        if proto is not None and not (is_integer(proto) and proto in (PROTO, ACCOUNTS_PROTO)):
            raise _bad_args(f"this server speaks proto {PROTO} and {ACCOUNTS_PROTO}")
        token = _optional_string(body, "token")
        password = _optional_string(body, "password")
        self.server.check_token(token)
        _check_nick(nick)
        if password is not None and self.server.accounts.enabled \
                and not self.login(nick, password):
            return  # it ended while the password was checked (no accounts: ignored)
        try:
            self.server.register(self, nick)
        except RequestError:
            if self.account is not None:  # hello logs in as the nick it registers, or not
                self.set_account(None)
            raise
        settings = self.server.settings
        extra: dict[str, Any] = {}
        if proto == ACCOUNTS_PROTO:
            extra = {"account": self.account, "registration": settings.registration}
        self._ok(request.id, session=self.session_id, nick=nick, server=self.server.name,
                 proto=proto or PROTO, limits=settings.limits(), **extra)

    def op_register(self, request: Request) -> None:
        """Extension (proto 2): make the session's nick an account with `password`, and
        log the session in as it."""
        password = _string(request.body, "password")
        nick = self.nick
        assert nick is not None
        account = self.server.accounts.register(nick, password, self.address)
        if self.is_open:
            self.set_account(account)
            self._ok(request.id, account=account.name)

    def op_password(self, request: Request) -> None:
        """Extension (proto 2): change the password of the account it is logged in as."""
        body = request.body
        old, new = _string(body, "password"), _string(body, "new_password")
        accounts = self.server.accounts
        check_password(new, accounts.min_password)  # bad_args, weak_password: first
        name = self._account()
        if self.login(name, old):
            accounts.change_password(name, new, self.address)
            self._ok(request.id, account=name)

    def op_drop(self, request: Request) -> None:
        """Extension (proto 2): delete the account it is logged in as (its password
        again, to be sure); the session stays, as a guest with the same nick."""
        password = _string(request.body, "password")
        name = self._account()
        if self.login(name, password):
            self.server.account_dropped(self.server.accounts.drop(name))
            self._ok(request.id, account=name)

    def _account(self) -> str:
        if self.account is None:
            raise RequestError("not_logged_in", "log in first (hello with a password)")
        return self.account

    def op_join(self, request: Request) -> None:
        body = request.body
        name = _string(body, "room")
        after = _optional_seq(body, "after")
        _check_room(name)
        if name not in self.rooms and len(self.rooms) >= self.server.settings.max_rooms:
            raise RequestError("too_many_rooms",
                               f"you may be in at most {self.server.settings.max_rooms} rooms")
        self.server.join(self, name, after, request.id)

    def op_leave(self, request: Request) -> None:
        name = _string(request.body, "room")
        room = self._joined(name)
        self.server.leave(self, room, "leave")
        self.rooms.pop(name, None)  # a cluster node's leave blocks: the session may have ended
        self._ok(request.id, room=name)

    def _say_args(self, body: dict[str, Any]) -> tuple[ChatRoom, str]:
        name = _string(body, "room")
        text = _text(body)
        self._check_text(text)
        return self._joined(name), text

    def op_say(self, request: Request) -> None:
        room, text = self._say_args(request.body)
        # Not waiting here lets the client's next says join the same batch; the ok
        # comes from the GroupCommit, after the msg.
        self._says = self.server.publish(room, self, text, request.id)

    def op_whisper(self, request: Request) -> None:
        body = request.body
        to = _string(body, "to")
        text = _text(body)
        self._check_text(text)
        self.server.whisper(self, to, text)
        self._ok(request.id)

    def op_nick(self, request: Request) -> None:
        nick = _string(request.body, "nick")
        _check_nick(nick)
        if nick != self.nick:
            self.server.rename(self, nick)
        self._ok(request.id, nick=nick)

    def op_rooms(self, request: Request) -> None:
        # Extension (docs/protocol.md): pages of at most ROOMS_PAGE rooms, so the reply's
        # cost is bounded whatever the number of rooms.
        body = request.body
        after = _optional_string(body, "after")
        limit = body.get("limit")
        if limit is None:
            limit = ROOMS_PAGE
        elif not (is_integer(limit) and 1 <= limit <= ROOMS_PAGE):
            raise _bad_args(f'"limit" must be an integer from 1 to {ROOMS_PAGE}')
        rooms, more = self.server.room_list(after, limit)
        self._ok(request.id, rooms=rooms, more=more)

    def op_who(self, request: Request) -> None:
        name = self._existing_room(_string(request.body, "room"))
        view = self.server.who(name)
        self._ok(request.id, room=name, members=view.members, **_view_fields(view))

    def op_topic(self, request: Request) -> None:
        """Extension: without `text`, the room's topic; with it, set it ("" clears)."""
        body = request.body
        name = _string(body, "room")
        text = _optional_string(body, "text")
        if text is None:
            topic = self.server.who(self._existing_room(name)).topic
        else:
            _one_line("text", text)
            topic = self.server.set_topic(self, self._joined(name), text)
        self._ok(request.id, room=name, topic=topic.fields() if topic is not None else None)

    def op_kick(self, request: Request) -> None:
        """Extension: an operator takes a member out of the room."""
        body = request.body
        name = _string(body, "room")
        nick = _string(body, "nick")
        reason = _optional_string(body, "reason")
        if reason is not None:
            _one_line("reason", reason)
        kicked = self.server.kick(self, self._joined(name), nick, reason or None)
        self._ok(request.id, room=name, nick=kicked)

    def op_mode(self, request: Request) -> None:
        """Extension: an operator changes the room: +o/-o, +v/-v a member; +t/-t, +m/-m."""
        body = request.body
        name = _string(body, "room")
        change = _string(body, "change")
        if change not in MODE_CHANGES:
            raise _bad_args('"change" must be +o, -o, +v, -v (with "nick"), +t, -t, +m or -m')
        nick = _string(body, "nick") if change[1] in "ov" else None
        self.server.set_mode(self, self._joined(name), change, nick)
        self._ok(request.id, room=name)

    def op_history(self, request: Request) -> None:
        body = request.body
        name = _string(body, "room")
        before = _optional_seq(body, "before")
        after = _optional_seq(body, "after")
        if before is not None and after is not None:
            raise _bad_args('give "before" or "after", not both')
        limit = body.get("limit")
        if limit is None:
            limit = 50
        elif not (is_integer(limit) and 1 <= limit <= 100):
            raise _bad_args('"limit" must be an integer from 1 to 100')
        self._existing_room(name)
        messages = self.server.history(name, before, after, limit)
        self.send_reply(encode_with_items({"op": "ok", "id": request.id, "room": name},
                                    "messages", messages))

    def op_ping(self, request: Request) -> None:
        self._ok(request.id)

    def op_quit(self, request: Request) -> None:
        _optional_string(request.body, "reason")
        self._ok(request.id)
        self.close("quit", bye("quit"))

    def op_stats(self, request: Request) -> None:
        """Extension: the server's live counts, for operators and the tests."""
        self._ok(request.id, **self.server.stats())

    def _check_text(self, text: str) -> None:
        max_text = self.server.settings.max_text
        if len(text) > max_text:
            raise RequestError("text_too_long", f"a text may be at most {max_text} characters")


_HANDLERS: dict[str, Callable[[ChatSession, Request], None]] = {
    name[3:]: getattr(ChatSession, name) for name in dir(ChatSession) if name.startswith("op_")
}
