"""A WebSocket test client on a gevent socket: wsproto's client side, PROTOCOL.md frames
as text messages. It reads like tests/rawclient.py's Client, which it extends."""

from __future__ import annotations

import json
from typing import Any

from gevent import socket as gsocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.rawclient import DEFAULT_TIMEOUT, Client, Closed


class WsRefused(AssertionError):
    """The server refused the handshake: `status` and `body`."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"handshake refused: {status} {body!r}")
        self.status = status
        self.body = body


class WsClient(Client):
    """PROTOCOL.md over a WebSocket: `send` and `request` as for TCP; `close_code` is the
    code of the server's close frame once one came; `control` keeps pongs and closes."""

    def __init__(self, address: tuple[str, int], *, origin: str | None = "same",
                 sock: Any = None) -> None:
        super().__init__(address, sock=sock or gsocket.create_connection(
            address, timeout=DEFAULT_TIMEOUT))
        self.ws = WSConnection(ConnectionType.CLIENT)
        host = f"{address[0]}:{address[1]}"
        headers = []
        if origin is not None:
            headers.append((b"origin", (f"http://{host}" if origin == "same" else origin).encode()))
        self.sock.sendall(self.ws.send(Request(host=host, target="/ws", extra_headers=headers)))
        self.close_code: int | None = None
        self.control: list[Event] = []
        self._text: list[str] = []
        first = self._next_event()
        if isinstance(first, RejectConnection):
            body = b""
            while first.has_body:
                data = self._next_event()
                assert isinstance(data, RejectData)
                body += data.data
                if data.body_finished:
                    break
            raise WsRefused(first.status_code, body)
        assert isinstance(first, AcceptConnection), first

    def send(self, *frames: dict[str, Any]) -> None:
        self.sock.sendall(b"".join(self.ws.send(Message(data=json.dumps(frame)))
                                   for frame in frames))

    def send_event(self, event: Event) -> None:
        """Any wsproto event: fragments, pings, binary messages, a close."""
        self.sock.sendall(self.ws.send(event))

    def _next_event(self) -> Event:
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(262144)
            if not data:
                self.closed = True
                raise Closed("connection closed by the server")
            self.ws.receive_data(data)

    def _read_frame(self) -> dict[str, Any]:
        while True:
            event = self._next_event()
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return json.loads(text)
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                self.control.append(event)
            elif isinstance(event, (Pong, BytesMessage)):
                self.control.append(event)
