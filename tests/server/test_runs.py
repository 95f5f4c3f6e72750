"""Runs (publish.py): messages of one room delivered together are queued as one piece
per member, yet a member that reads promptly is never dropped for it. A run stays
under an eighth of both queue bounds for every door's rendering; a bigger one goes
message by message, pacing between them, as before runs."""

from __future__ import annotations

import json

import gevent

from tests.irc.test_door import IrcClient, free_port
from tests.rawclient import Client, Closed


def _say(n: int, text: str) -> bytes:
    return json.dumps({"op": "say", "room": "#r", "text": text, "id": n}).encode() + b"\n"


def _read_or_fail(client: Client, count: int, op: str) -> list[dict]:
    frames: list[dict] = []
    try:
        while sum(f["op"] == op for f in frames) < count:
            frame = client.recv(timeout=5)
            assert frame["op"] != "bye", f"{client} reads promptly, yet was dropped: {frame}"
            frames.append(frame)
    except Closed:
        raise AssertionError(f"dropped after {len(frames)} frames, though it reads") from None
    return frames


def test_a_burst_longer_than_the_frame_bound_drops_no_prompt_reader(make_server):
    server = make_server(max_queue_frames=20)  # half is 10: 30 says would pass it
    alice, bob = Client(server.addresses[0]), Client(server.addresses[0])
    try:
        for client, nick in ((alice, "alice"), (bob, "bob")):
            client.hello(nick)
            client.join("#r")
        alice.pending.clear()
        alice.send_raw(b"".join(_say(n, f"m{n}") for n in range(30)))  # one batch
        msgs = [f for f in _read_or_fail(bob, 30, "msg") if f["op"] == "msg"]
        assert [f["seq"] for f in msgs] == list(range(1, 31))
        mine = [f for f in _read_or_fail(alice, 30, "ok") if f["op"] in ("msg", "ok")]
        assert [f["op"] for f in mine] == ["msg", "ok"] * 30  # each msg, then its ok
    finally:
        alice.close()
        bob.close()


def test_a_burst_that_irc_renders_many_times_larger_drops_no_prompt_irc_reader(make_server):
    # A text of 500 lines is 500 PRIVMSGs on IRC: about 13 times its JSON size.
    port = free_port()
    server = make_server(irc_port=port, irc_name="irc.test", max_queue_bytes=64 * 1024)
    alice, bob = Client(server.addresses[0]), IrcClient(port)
    try:
        alice.hello("alice")
        alice.join("#r")
        bob.register("bob")
        bob.join("#r")
        bob.sync()
        alice.send_raw(b"".join(_say(n, "a\n" * 500) for n in range(5)))  # one batch
        lines = 0
        with gevent.Timeout(10, AssertionError("bob stopped getting lines")):
            while lines < 5 * 500:
                message = bob.recv()
                assert message.command != "ERROR", f"bob reads promptly, yet: {message}"
                lines += message.command == "PRIVMSG"
    finally:
        alice.close()
        bob.sock.close()
