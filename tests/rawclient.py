"""A deliberately raw protocol client for tests: bytes on a gevent socket, JSON lines back."""

from __future__ import annotations

import itertools
import json
import socket
from collections import deque
from typing import Any

import gevent
from gevent import socket as gsocket

DEFAULT_TIMEOUT = 5.0


class Closed(AssertionError):
    """The server closed the connection while the test expected a frame."""


class Client:
    """Sends frames, reads frames; every read has a timeout."""

    def __init__(self, address: tuple[str, int], *, sock: socket.socket | None = None) -> None:
        self.sock = sock or gsocket.create_connection(address, timeout=DEFAULT_TIMEOUT)
        self.buffer = b""
        self._lines: deque[bytes] = deque()
        self.pending: deque[dict[str, Any]] = deque()
        self.closed = False
        self._ids = itertools.count(1)

    # -- sending --------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *frames: dict[str, Any]) -> None:
        self.sock.sendall(b"".join(json.dumps(f).encode() + b"\n" for f in frames))

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id; return its reply. Events read meanwhile
        stay queued for `recv`."""
        fields.setdefault("id", f"r{next(self._ids)}")
        self.send({"op": op, **fields})
        return self.reply_to(fields["id"])

    def reply_to(self, request_id: Any, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        skipped = []
        try:
            with gevent.Timeout(timeout, AssertionError(f"no reply to {request_id!r}")):
                while True:
                    frame = self._read_frame()
                    if frame.get("op") in ("ok", "error") and frame.get("id") == request_id:
                        return frame
                    skipped.append(frame)
        finally:
            self.pending.extend(skipped)

    def hello(self, nick: str, **fields: Any) -> dict[str, Any]:
        reply = self.request("hello", nick=nick, **fields)
        assert reply["op"] == "ok", reply
        return reply

    def join(self, room: str, **fields: Any) -> dict[str, Any]:
        reply = self.request("join", room=room, **fields)
        assert reply["op"] == "ok", reply
        return reply

    # -- receiving ------------------------------------------------------------------------
    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame (queued ones first)."""
        if self.pending:
            return self.pending.popleft()
        with gevent.Timeout(timeout, AssertionError(f"no frame within {timeout:g} s")):
            return self._read_frame()

    def recv_until(self, predicate, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Frames up to and including the first that satisfies `predicate`."""
        frames = []
        with gevent.Timeout(timeout, AssertionError(f"no matching frame within {timeout:g} s")):
            while True:
                frame = self.recv(timeout=timeout)
                frames.append(frame)
                if predicate(frame):
                    return frames

    def expect_nothing(self) -> None:
        """Assert no frame arrives: a ping round trip proves the server answered
        everything sent before it."""
        unexpected = self.drain()
        assert unexpected == [], f"unexpected frames {unexpected}"

    def drain(self) -> list[dict[str, Any]]:
        """Every frame that arrives before the reply to a fresh ping."""
        ping_id = f"drain{next(self._ids)}"
        self.send({"op": "ping", "id": ping_id})
        frames = self.recv_until(lambda f: f == {"op": "ok", "id": ping_id})
        return frames[:-1]

    def read_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Every frame until the server closes the connection."""
        frames = list(self.pending)
        self.pending.clear()
        with gevent.Timeout(timeout, AssertionError(f"connection still open after {timeout:g} s")):
            while True:
                try:
                    frames.append(self._read_frame())
                except Closed:
                    return frames

    def _read_frame(self) -> dict[str, Any]:
        while not self._lines:
            try:
                data = self.sock.recv(262144)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                raise Closed("connection closed by the server")
            lines = (self.buffer + data).split(b"\n")
            self.buffer = lines.pop()
            self._lines.extend(lines)
        return json.loads(self._lines.popleft())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def never_reading(address: tuple[str, int]) -> Client:
    """A client whose receive buffer is tiny and who never reads it."""
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(address)
    return Client(address, sock=sock)
