"""What the baseline servers share: the protocol subset, with no I/O.

The subset: hello, join (with presence to the members), say (msg to every member, then
ok) and ping; enough for every benchmark scenario. Like gchat, a msg is encoded once
and the same bytes are queued to every member. No persistence, no rate limit, no idle
timeout: these are the simplest honest servers of each concurrency model, not chat
servers.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Protocol

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(frame: dict[str, Any]) -> bytes:
    return _encode(frame).encode() + b"\n"


class Peer(Protocol):
    nick: str | None
    rooms: set[str]

    def queue(self, data: bytes) -> None: ...


class Chat:
    """Rooms and nicks; `handle` answers one line for `peer` by calling peer.queue."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[int, Peer]] = {}
        self.seqs: dict[str, int] = {}
        self.nicks: set[str] = set()
        self.next_session = 0

    def handle(self, peer: Peer, line: bytes) -> None:
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            peer.queue(encode({"op": "error", "id": None, "code": "bad_frame", "message": "bad frame"}))
            return
        rid = request.get("id")
        if op == "hello":
            nick = request.get("nick")
            if not isinstance(nick, str) or nick.lower() in self.nicks:
                peer.queue(encode({"op": "error", "id": rid, "code": "nick_taken", "message": "taken"}))
                return
            self.nicks.add(nick.lower())
            peer.nick = nick
            self.next_session += 1
            peer.queue(encode({"op": "ok", "id": rid, "session": self.next_session, "nick": nick}))
        elif op == "join":
            name = request["room"]
            members = self.rooms.setdefault(name, {})
            if id(peer) not in members:
                presence = encode({"op": "presence", "room": name, "nick": peer.nick, "event": "join"})
                for member in members.values():
                    member.queue(presence)
            peer.rooms.add(name)
            members[id(peer)] = peer
            peer.queue(encode({"op": "ok", "id": rid, "room": name,
                               "members": sorted((m.nick or "" for m in members.values()), key=str.lower),
                               "history": []}))
        elif op == "say":
            name = request["room"]
            members = self.rooms.get(name, {})
            seq = self.seqs[name] = self.seqs.get(name, 0) + 1
            event = encode({"op": "msg", "room": name, "from": peer.nick, "text": request["text"],
                            "seq": seq, "ts": int(time.time() * 1000)})
            for member in members.values():
                member.queue(event)
            peer.queue(encode({"op": "ok", "id": rid, "room": name, "seq": seq}))
        elif op == "ping":
            peer.queue(encode({"op": "ok", "id": rid}))
        else:
            peer.queue(encode({"op": "error", "id": rid, "code": "unknown_op", "message": op}))

    def gone(self, peer: Peer) -> None:
        for name in peer.rooms:
            self.rooms.get(name, {}).pop(id(peer), None)
        if peer.nick:
            self.nicks.discard(peer.nick.lower())


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--uvloop", action="store_true", help="asyncio only: run on uvloop")
    return parser.parse_args()
