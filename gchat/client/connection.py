"""ClientSession: the client side of a connection, on the engine's Session.

Strategy: every request gets a fresh integer id and an AsyncResult; `on_recv` decodes
each server frame once and hands an `ok` or `error` to the waiter of its id, and any
other frame (an event) to the `on_event` callback, in the order they arrived. When the
session ends, every waiter gets a `disconnected` error, so no caller waits forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from gevent import Timeout
from gevent.event import AsyncResult, Event

from ..core import Session, SessionLimits
from ..errors import GchatError
from ..protocol import encode

__all__ = ["ClientSession", "RequestFailed"]

# Server frames may be longer than client frames (PROTOCOL.md 1): a history page.
CLIENT_LIMITS = SessionLimits(max_frame=16 * 1024 * 1024, max_queue_bytes=1 << 24,
                              max_queue_frames=1 << 16)


class RequestFailed(GchatError):
    """The server answered a request with an error (or the connection ended first)."""

    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op}: {code}: {message}")
        self.op, self.code, self.message = op, code, message


class ClientSession(Session):
    """A connection to a gchat server: `request` sends and waits for the reply;
    events go to `on_event`; `gone` is set once the connection has ended."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(limits=CLIENT_LIMITS)
        self.on_event = on_event
        self.gone = Event()
        self._waiters: dict[int, tuple[str, AsyncResult]] = {}
        self._next_id = 0

    def on_recv(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except ValueError:
            return  # not ours to judge; a client ignores what it cannot read
        if not isinstance(frame, dict):
            return
        if frame.get("op") == "ping":
            self.send(encode({"op": "pong"}))  # PROTOCOL.md 5: or the idle timeout ends us
            return
        if frame.get("op") in ("ok", "error") and frame.get("id") in self._waiters:
            _, waiter = self._waiters.pop(frame["id"])
            waiter.set(frame)
        elif self.on_event is not None:
            self.on_event(frame)

    def on_disconnected(self, reason: str) -> None:
        self.gone.set()
        waiters, self._waiters = self._waiters, {}
        for _, waiter in waiters.values():
            waiter.set({"op": "error", "code": "disconnected", "message": f"connection lost ({reason})"})

    def submit(self, op: str, **fields: Any) -> AsyncResult:
        """Send a request now; the AsyncResult gets its reply frame."""
        self._next_id += 1
        waiter: AsyncResult = AsyncResult()
        if not self.is_open:
            waiter.set({"op": "error", "code": "disconnected", "message": "not connected"})
            return waiter
        self._waiters[self._next_id] = (op, waiter)
        self.send(encode({"op": op, "id": self._next_id, **fields}))
        return waiter

    def request(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its reply; RequestFailed unless it is ok."""
        try:
            reply = cast(dict[str, Any], self.submit(op, **fields).get(timeout=timeout))
        except Timeout:
            raise RequestFailed(op, "timeout", f"no answer in {timeout:g} s") from None
        if reply["op"] != "ok":
            raise RequestFailed(op, reply.get("code", "?"), reply.get("message", ""))
        return reply
