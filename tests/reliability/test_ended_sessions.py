"""A session that has ended runs no more requests (PROTOCOL.md 6, guarantee 4).

The hole: a request that waits (here for the session's own pipelined says, which every
other request of that session waits for) could run after the session ended meanwhile,
dropped as a slow consumer by the very says it waited for. A `join` then left a ghost
member that never quits; a `nick` raised inside the server; on a cluster node a `nick`
claimed the new nick for ever. Each test makes the drop land exactly while the request
waits, then checks that the request was a no-op.
"""

from __future__ import annotations

import itertools

import gevent
import pytest

from tests.rawclient import Client, never_reading

# A queue bound of a few frames, so a handful of small says overflows it at will.
SMALL_QUEUE = ("--max-queue-frames", "8")
_probes = itertools.count(1)


def queued_frames(address: tuple[str, int]) -> int:
    """Frames the server has accepted but not yet written, over every session."""
    probe = Client(address)
    try:
        probe.hello(f"probe{next(_probes)}")
        return probe.request("stats")["queued_frames"]
    finally:
        probe.close()


def registered(address: tuple[str, int]) -> int:
    probe = Client(address)
    try:
        probe.hello(f"probe{next(_probes)}")
        return probe.request("stats")["registered"] - 1  # not the probe itself
    finally:
        probe.close()


def drop_while_waiting(address: tuple[str, int], request: dict, bystander: Client) -> None:
    """`ghost`, in room `r` with `bystander`, fills its socket until the server queues
    for it, then pipelines small says and `request`: the says overflow its queue while
    `request` waits for them. Returns once the server has dropped `ghost`."""
    ghost = never_reading(address)
    ghost.hello("ghost")
    ghost.join("r")
    bystander.recv_until(lambda f: f.get("op") == "presence" and f["nick"] == "ghost")
    with gevent.Timeout(20, AssertionError("the ghost's socket never filled")):
        while queued_frames(address) == 0:
            ghost.send({"op": "say", "room": "r", "text": "x" * 4000})
            bystander.recv_until(lambda f: f.get("op") == "msg")
    # One write, one read on the server: the says join one batch and `request` waits
    # for it. Their msgs and oks pass ghost's bound (8 frames; 1 to 7 are queued now)
    # and drop it; the bystander gets only the 4 msgs, within its bound.
    ghost.send(*[{"op": "say", "room": "r", "text": "y"} for _ in range(4)], request)
    with gevent.Timeout(10, AssertionError("the ghost was never dropped")):
        while registered(address) != 1:
            gevent.sleep(0.02)
    quits = [f for f in bystander.recv_until(
        lambda f: f.get("op") == "presence" and f["event"] == "quit")
        if f.get("op") == "presence"]
    assert [(f["nick"], f["event"]) for f in quits] == [("ghost", "quit")]
    ghost.close()


@pytest.fixture
def address(spawn_live):
    return spawn_live(*SMALL_QUEUE).address


def test_a_join_waiting_when_its_session_is_dropped_does_not_join(address):
    bob = Client(address)
    bob.hello("bob")
    bob.join("r")
    drop_while_waiting(address, {"op": "join", "room": "haunted", "id": 1}, bob)

    assert bob.request("who", room="haunted")["code"] == "no_such_room"
    alice = Client(address)
    alice.hello("ghost")  # the nick is free
    assert alice.join("haunted")["members"] == ["ghost"]
    assert bob.drain() == []  # nobody else ever quit or joined


def test_a_nick_waiting_when_its_session_is_dropped_renames_nothing(spawn_live):
    live = spawn_live(*SMALL_QUEUE)
    bob = live.client("bob")
    bob.join("r")
    drop_while_waiting(live.address, {"op": "nick", "nick": "renamed", "id": 1}, bob)

    for nick in ("ghost", "renamed"):  # both free: the rename never happened
        Client(live.address).hello(nick)
    assert bob.drain() == []
    assert b"Traceback" not in live.process.log and b"failed" not in live.process.log

