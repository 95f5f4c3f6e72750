"""The baseline servers (bench/baselines) answer one protocol subset alike: the same
conversation gets the same frames from each, the gevent baseline included. Each runs
as the benchmark runs it, a subprocess on a free loopback port."""

from __future__ import annotations

import importlib.util
import json
import socket as stdlib_socket

import gevent
import pytest
from gevent import socket

from gchat.bench.runner import _free_port, _Process, _wait_listening, server_command

BASELINES = ["threads", "asyncio", "gevent",
             pytest.param("uvloop", marks=pytest.mark.skipif(importlib.util.find_spec("uvloop") is None,
                                                             reason="uvloop: requirements-bench.txt"))]


class Peer:
    """A JSON client that reads whole lines, each within a timeout."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, frame: dict) -> None:
        self.send(json.dumps(frame).encode() + b"\n")

    def frames(self, count: int) -> list[dict]:
        """The next `count` frames, the server's `ts` made 0 (it is a time)."""
        got = []
        with gevent.Timeout(5, AssertionError(f"{count} frames did not come; got {got}")):
            while len(got) < count:
                if b"\n" not in self.buffer:
                    data = self.sock.recv(65536)
                    assert data, f"the server closed; got {got}"
                    self.buffer += data
                    continue
                line, self.buffer = self.buffer.split(b"\n", 1)
                frame = json.loads(line)
                if "ts" in frame:
                    frame["ts"] = 0
                got.append(frame)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def baseline(request):
    """A baseline server subprocess, as the runner starts it; its port."""
    port = _free_port()
    server = _Process(server_command(request.param, port, "memory"), None)
    try:
        _wait_listening(server, port, timeout=20)
        yield port
    finally:
        server.stop()


@pytest.mark.parametrize("baseline", BASELINES, indirect=True)
def test_every_baseline_answers_the_benchmark_subset_alike(baseline):
    alice, bob, other = Peer(baseline), Peer(baseline), Peer(baseline)
    try:
        alice.request({"op": "hello", "id": 1, "nick": "alice"})
        alice.request({"op": "join", "id": 2, "room": "lobby"})
        assert alice.frames(2) == [
            {"op": "ok", "id": 1, "session": 1, "nick": "alice"},
            {"op": "ok", "id": 2, "room": "lobby", "members": ["alice"], "history": []}]
        # pipelined, as the load sends them: registered and joined in one round trip
        bob.send(b'{"op":"hello","id":"b1","nick":"Bob"}\n{"op":"join","id":"b2","room":"lobby"}\n')
        assert bob.frames(2) == [
            {"op": "ok", "id": "b1", "session": 2, "nick": "Bob"},
            {"op": "ok", "id": "b2", "room": "lobby", "members": ["alice", "Bob"], "history": []}]
        assert alice.frames(1) == [{"op": "presence", "room": "lobby", "nick": "Bob", "event": "join"}]
        # a say: msg to every member, the sender included, before its ok; seq from 1
        bob.request({"op": "say", "id": 3, "room": "lobby", "text": "hi"})
        msg = {"op": "msg", "room": "lobby", "from": "Bob", "text": "hi", "seq": 1, "ts": 0}
        assert bob.frames(2) == [msg, {"op": "ok", "id": 3, "room": "lobby", "seq": 1}]
        assert alice.frames(1) == [msg]
        alice.request({"op": "say", "id": 4, "room": "lobby", "text": "hello"})
        assert alice.frames(2)[1] == {"op": "ok", "id": 4, "room": "lobby", "seq": 2}
        assert bob.frames(1)[0]["seq"] == 2
        alice.request({"op": "ping", "id": 5})
        assert alice.frames(1) == [{"op": "ok", "id": 5}]
        # what the subset refuses: a taken nick (any case), an op it lacks, a bad frame
        other.request({"op": "hello", "id": 6, "nick": "ALICE"})
        other.request({"op": "whisper", "id": 7, "to": "alice", "text": "x"})
        other.send(b"not json\n")
        codes = [(f["op"], f["id"], f["code"]) for f in other.frames(3)]
        assert codes == [("error", 6, "nick_taken"), ("error", 7, "unknown_op"), ("error", None, "bad_frame")]
        # a member that goes leaves the room: the next say reaches only those left
        bob.close()
        with gevent.Timeout(5, AssertionError("bob is still a member 5 s after closing")):
            members = None
            while members != ["alice"]:  # the subset has no quit presence: ask until it shows
                alice.request({"op": "join", "id": 8, "room": "lobby"})
                members = alice.frames(1)[0]["members"]
                gevent.sleep(0.01)
    finally:
        for peer in (alice, bob, other):
            peer.close()
