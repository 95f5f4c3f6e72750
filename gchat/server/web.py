"""WebSession: the web door, HTTP on its own port, and PROTOCOL.md over a WebSocket.

Strategy: h11 (HTTP/1.1) and wsproto (RFC 6455) parse, sans-I/O, exactly as the line
framer and the IRC codec do for the other doors: bytes in, events out. A connection
starts as HTTP: `GET /` and the page's files (gchat/web/, read once at start),
`GET /metrics` (Prometheus), `GET /healthz`, and `GET /ws`, which upgrades it. Once
upgraded it is the JSON door (ChatSession) with other framing: each text message from
the client is one request frame, each server frame is one text message. So every
rule of PROTOCOL.md holds as on TCP, from the same code.

A broadcast renders an event once per door (core/room.py): for WebSocket members
that is one server frame (unmasked, so every member gets the same bytes).

What a client controls before it is upgraded is bounded: the request head's size
(MAX_HEAD), the time to send it (HEAD_TIMEOUT), and the connection itself, which counts
against the port's --max-connections like any other. A cross-site page cannot open
a WebSocket with a user's browser (CSWSH): a handshake whose Origin is not this
page's own origin nor listed in --http-origins gets 403. Clients that send no Origin
(not browsers) are let in. docs/web.md has the endpoints and the policy.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING

import gevent
import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..core import Session
from ..protocol import bye, encode
from .events import ChatEvent
from .metrics import CONTENT_TYPE
from .session import ChatSession

if TYPE_CHECKING:
    from .chat import ChatServer

__all__ = ["WebFiles", "WebSession", "close_frame", "text_frame"]

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # bytes of a request line and headers
HEAD_TIMEOUT = 10.0  # seconds to send a whole request head
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
          ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}
# The page loads nothing from elsewhere and runs no inline script: a message that got
# through as markup still could not run.
_PAGE_HEADERS = [(b"Content-Security-Policy",
                  b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                  b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
                 (b"X-Content-Type-Options", b"nosniff"), (b"Referrer-Policy", b"no-referrer"),
                 (b"Cache-Control", b"no-store")]
# Close codes (RFC 6455 7.4.1) for the reasons a server ends a session.
_CLOSE_CODES = {"shutdown": 1001, "frame_too_large": 1009, "slow_consumer": 1008,
                "idle_timeout": 1000, "quit": 1000, "kicked": 1008, "server_full": 1013}
_TEXT = "text/plain; charset=utf-8"
HTTP_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")  # past --max-connections


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (a server's) holding `payload`; a JSON
    line's LF is left out. Pure: the same bytes for every member of a broadcast."""
    if payload.endswith(b"\n"):
        payload = payload[:-1]
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 65536:
        head = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        head = b"\x81\x7f" + size.to_bytes(8, "big")
    return head + payload


_WS_PING = text_frame(encode({"op": "ping"}))


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's close frame with `code` (and a short reason)."""
    payload = code.to_bytes(2, "big") + reason.encode()[:120]
    return bytes((0x88, len(payload))) + payload


class WebFiles:
    """The page's files (gchat/web/), read once: name -> (content type, bytes)."""

    def __init__(self, folder: Path = WEB_DIR) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                kind = _TYPES.get(path.suffix)
                if kind and path.is_file() and _FILE_NAME.fullmatch(path.name):
                    self.files[path.name] = (kind, path.read_bytes())

    def get(self, target: str) -> tuple[str, bytes] | None:
        """The file a request target names (`/` is index.html), or None."""
        name = target.partition("?")[0].lstrip("/") or "index.html"
        return self.files.get(name)


class WebSession(ChatSession):
    """One connection to the HTTP port: requests until it is upgraded to a WebSocket,
    then a JSON-door session whose frames are WebSocket text messages."""

    door = "http"  # "ws" once upgraded
    _ws: Connection | None = None
    _message: bytearray | None = None  # the text message being received
    _pieces = 0  # its frames, each counted as a byte at least

    __slots__ = ("_head_timer", "_http", "_request")

    def __init__(self, server: ChatServer) -> None:
        super().__init__(server)
        self._http: h11.Connection | None = h11.Connection(h11.SERVER,
                                                           max_incomplete_event_size=MAX_HEAD)
        self._request: h11.Request | None = None
        self._head_timer: gevent.Greenlet | None = gevent.spawn_later(HEAD_TIMEOUT,
                                                                      self._head_too_slow)

    # -- engine hooks ------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self._ws is not None:
            self._ws_data(data)
        elif self._http is not None:
            self._http.receive_data(data)
            self._http_events()

    def on_eof(self) -> None:
        if self._ws is None:
            self.close("eof")
        else:
            super().on_eof()

    def on_disconnected(self, reason: str) -> None:
        self._stop_head_timer()
        super().on_disconnected(reason)

    def close(self, reason: str, farewell: bytes | None = None, *, discard: bool = False,
              linger: float | None = None) -> None:
        if self._ws is None:
            farewell = None  # an HTTP client is told nothing in JSON nor in WebSocket frames
        elif farewell is not None and farewell[:1] == b"{":  # a JSON line: a bye
            farewell = self.farewell(reason)
        super().close(reason, farewell, discard=discard, linger=linger)

    # -- the JSON door, framed as WebSocket messages --------------------------------------

    def render(self, event: ChatEvent) -> bytes:
        return text_frame(event.json)

    def send_reply(self, data: bytes) -> bool:
        return super().send_reply(text_frame(data) if self._ws is not None else data)

    def idle_ping(self) -> None:
        if self._ws is not None:
            self.send(_WS_PING)

    def farewell(self, reason: str) -> bytes:
        return text_frame(bye(reason)) + close_frame(_CLOSE_CODES.get(reason, 1000), reason)

    def slow_consumer_farewell(self) -> bytes:
        return self.farewell("slow_consumer")

    # -- HTTP ------------------------------------------------------------------------------

    def _http_events(self) -> None:
        http = self._http
        assert http is not None
        while self.is_open and self._ws is None:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 400 and http.their_state is h11.IDLE:
                    status = 431 if len(http.trailing_data[0]) >= MAX_HEAD else 400
                self._refuse(status, f"bad request: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._stop_head_timer()
                if any(name in (b"content-length", b"transfer-encoding") and value != b"0"
                       for name, value in event.headers):
                    self._refuse(413, "a request to this server has no body")
                    return
                # h11 bounds a head that arrives in pieces; one that came whole, here.
                if len(event.target) + sum(len(name) + len(value) + 4
                                           for name, value in event.headers) > MAX_HEAD:
                    self._refuse(431, "the request head is too large")
                    return
                self.last_activity = monotonic()
                self._request = event
            elif isinstance(event, h11.Data):
                self._refuse(413, "a request to this server has no body")
                return
            elif isinstance(event, h11.EndOfMessage):
                request, self._request = self._request, None
                assert request is not None
                self._respond_to(request)
            elif isinstance(event, h11.ConnectionClosed):
                self.close("eof")
                return

    def _respond_to(self, request: h11.Request) -> None:
        if not self.wait_to_read():  # pipelined requests, unread answers: stop reading
            return
        path = request.target.decode("ascii", "replace").partition("?")[0]
        head = request.method == b"HEAD"
        if not self.bucket.take(monotonic()):  # requests, pipelined or not, take tokens too
            self.server.metrics.rate_limited.labels("http").inc()
            self._answer(429, b"too many requests: slow down\n", head=head, close="rate_limited")
        elif request.method not in (b"GET", b"HEAD"):
            self._answer(405, b"only GET here\n", headers=[(b"Allow", b"GET, HEAD")])
        elif path == "/ws":
            if head:
                self._answer(405, b"a WebSocket handshake is a GET\n", head=head,
                             close="bad_request")
            else:
                self._upgrade(request)
        elif path == "/metrics":
            self._answer(200, self.server.metrics.render(), CONTENT_TYPE, head=head)
        elif path == "/healthz":
            problem = self.server.health()
            body = b"ok\n" if problem is None else f"unavailable: {problem}\n".encode()
            self._answer(200 if problem is None else 503, body, head=head)
        elif (found := self.server.web_files.get(path)) is not None:
            self._answer(200, found[1], found[0], _PAGE_HEADERS, head=head)
        else:
            self._answer(404, b"not found\n", head=head)
        self._next_request()

    def _answer(self, status: int, body: bytes, content_type: str = _TEXT,
                headers: list[tuple[bytes, bytes]] | None = None, *, head: bool = False,
                close: str | None = None) -> None:
        """One response (its body left out for a HEAD); with `close`, the connection
        then closes for that reason."""
        http = self._http
        assert http is not None
        fields = [(b"Content-Type", content_type.encode()), (b"Content-Length", b"%d" % len(body)),
                  *(headers or []), *([(b"Connection", b"close")] if close else [])]
        try:
            data = http.send(h11.Response(status_code=status, headers=fields,
                                          reason=HTTPStatus(status).phrase))
            if not head:
                data += http.send(h11.Data(data=body))
            data += http.send(h11.EndOfMessage())
        except h11.LocalProtocolError:  # a request h11 could not read: nothing to answer
            data = b""
        Session.send_reply(self, data)
        if close:
            self.close(close)

    def _next_request(self) -> None:
        http = self._http
        if http is None or not self.is_open:  # upgraded, or closing
            return
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()  # keep-alive: the next request, with a fresh deadline
            self._head_timer = gevent.spawn_later(HEAD_TIMEOUT, self._head_too_slow)
        else:
            self.close("http_done")

    def _refuse(self, status: int, message: str) -> None:
        """Answer an unusable request with `status` and close (best effort)."""
        self._answer(status, (message[:200] + "\n").encode(), close="bad_request")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._ws is None and self.is_open:
            self._refuse(408, "the request head took too long")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.kill(block=False)
            self._head_timer = None

    # -- the WebSocket handshake -------------------------------------------------------------

    def _upgrade(self, request: h11.Request) -> None:
        origin = next((value for name, value in request.headers if name == b"origin"), None)
        host = next((value for name, value in request.headers if name == b"host"), b"")
        if origin is not None and not self.server.origin_allowed(origin.decode("latin-1"),
                                                                 host.decode("latin-1")):
            self._answer(403, b"this origin may not open a WebSocket here\n",
                         close="forbidden_origin")
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            next(ws.events())  # the handshake's Request: checked by wsproto
            accept = ws.send(AcceptConnection())
        except (RemoteProtocolError, LocalProtocolError, h11.LocalProtocolError,
                StopIteration) as exc:
            hint = getattr(exc, "event_hint", None)
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            self._refuse(status, f"not a WebSocket handshake: {exc}")
            return
        assert self._http is not None and ws.connection is not None
        trailing = self._http.trailing_data[0]
        self._http = None  # h11 is done with this connection: its memory goes
        self._ws = ws.connection
        self.door = "ws"
        self.last_activity = monotonic()
        Session.send_reply(self, accept)
        if trailing:
            self._ws_data(trailing)

    # -- WebSocket messages ----------------------------------------------------------------

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        try:
            ws.receive_data(data)
        except LocalProtocolError:
            return  # closed already
        for event in ws.events():
            if not self.wait_to_read():  # as the JSON door: a client that does not read
                return                   # what it asked for stops being read
            if isinstance(event, TextMessage):
                if not self._text(event):
                    return
            elif isinstance(event, BytesMessage):
                self._ws_close(1003, "gchat frames are text messages", "binary_message")
                return
            elif isinstance(event, Ping):
                # A pong costs a token and counts against the queue bound: pings are not
                # a way around either (RFC 6455 lets a server skip some).
                self.last_activity = monotonic()
                if self.bucket.take(self.last_activity):
                    self.send(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed_by_peer(ws, event)
                return
            else:  # a Pong
                self.last_activity = monotonic()

    def _text(self, event: TextMessage) -> bool:
        """A piece of a text message; a whole one is one request (PROTOCOL.md). False
        once the session is closing."""
        piece = event.data.encode()
        if self._message is None:
            self._message = bytearray()
        self._message += piece
        # An empty fragment counts as a byte, so fragments cannot go on for ever.
        self._pieces += max(1, len(piece))
        # The same texts fit through both doors: a message and its LF, as a line.
        if self._pieces + 1 > self.limits.max_frame:
            self._message, self._pieces = None, 0
            self.on_frame_too_large()
            return False
        if not event.message_finished:
            return True
        message = bytes(self._message)
        self._message, self._pieces = None, 0
        self.last_activity = monotonic()
        if message.strip(b" \t\r\n"):
            self.on_recv(message)
        return self.is_open

    def _closed_by_peer(self, ws: Connection, event: CloseConnection) -> None:
        reply = b""
        if ws.state is ConnectionState.REMOTE_CLOSING:
            reply = ws.send(event.response())
        elif ws.state is ConnectionState.OPEN:  # a broken frame: wsproto says which code
            reply = ws.send(CloseConnection(code=event.code, reason=(event.reason or "")[:120]))
        self._await_says()  # what it asked for before its close is answered first
        Session.close(self, "closed", reply or None)

    def _ws_close(self, code: int, reason: str, why: str) -> None:
        Session.close(self, why, close_frame(code, reason))

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"WebSession({self.session_id}, {self.door})"
