"""Bursts and big replies drop nobody who reads (PROTOCOL.md 6, guarantee 3).

Slow-consumer judgement falls only on a client that does not read: a group commit
of hundreds of large messages, or a reply larger than the queue bound, must not drop
a member that reads as fast as loopback allows; a client that never reads is still
dropped, and its queue stays bounded.
"""

from __future__ import annotations

import itertools
import time

import gevent

from tests.rawclient import Client, Closed, never_reading

# 4096 code points that JSON escapes to 6 bytes each (\u0001): a 24 KiB msg frame.
WIDE_TEXT = "\x01" * 4096
SAYS = 95  # per sender: with its hello, join and a ping, within the default burst (100)
_probes = itertools.count(1)


def stats(address: tuple[str, int]) -> dict:
    probe = Client(address)
    try:
        probe.hello(f"probe{next(_probes)}")
        return probe.request("stats")
    finally:
        probe.close()


class Reader:
    """A member reading everything as it arrives, in a greenlet of its own."""

    def __init__(self, client: Client, expected_msgs: int, expected_oks: int = 0) -> None:
        self.client = client
        self.seqs: list[int] = []
        self.events: list[dict] = []  # everything but msgs, in order
        self.msgs_before_ok: list[tuple[str, int]] = []  # ("msg"|"ok", seq) of its own says
        self.expected = expected_msgs
        self.expected_oks = expected_oks
        self.oks = 0
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        nick = self.client.nick
        try:
            while len(self.seqs) < self.expected or self.oks < self.expected_oks:
                frame = self.client.recv(timeout=30)
                if frame["op"] == "msg":
                    self.seqs.append(frame["seq"])
                    if frame["from"] == nick:
                        self.msgs_before_ok.append(("msg", frame["seq"]))
                elif frame["op"] == "ok" and "seq" in frame:
                    self.msgs_before_ok.append(("ok", frame["seq"]))
                    self.oks += 1
                else:
                    self.events.append(frame)
        except Closed:
            self.events.append({"op": "closed"})


def test_a_burst_every_member_reads_promptly_drops_no_one(spawn_live):
    # The default rate limit: each sender's 100 says fit its burst.
    live = spawn_live("--rate", "50", "--burst", "100")
    senders = []
    for nick in ("ann", "ben", "cid"):
        client = live.client(nick)
        client.nick = nick
        client.join("burst")
        senders.append(client)
    watcher = live.client("wes")
    watcher.nick = "wes"
    watcher.join("burst")
    for client in senders:
        client.drain()  # the others' presence
    watcher.drain()

    total = 3 * SAYS
    readers = [Reader(client, total, SAYS) for client in senders] + [Reader(watcher, total)]
    # Three bursts of 95 says, 2.3 MB each, at once: one group commit makes 7 MB for
    # every member, 1.7 times the 4 MiB queue bound.
    gevent.joinall([gevent.spawn(client.send, *[
        {"op": "say", "room": "burst", "text": WIDE_TEXT} for _ in range(SAYS)])
        for client in senders])
    gevent.joinall([reader.reader for reader in readers], timeout=60, raise_error=True)

    for reader in readers:
        assert reader.events == [], reader.events  # no bye slow_consumer, no error
        assert reader.seqs == list(range(1, total + 1))
    for reader in readers[:3]:
        order = reader.msgs_before_ok
        assert len(order) == 2 * SAYS
        assert all(order[i] == ("msg", order[i + 1][1]) and order[i + 1][0] == "ok"
                   for i in range(0, 2 * SAYS, 2)), "each msg comes just before its ok"
    assert stats(live.address)["registered"] == 5


def fill_room(address: tuple[str, int], room: str, count: int) -> None:
    writer = Client(address)
    writer.hello("writer")
    writer.join(room)
    for start in range(0, count, 100):
        writer.send(*[{"op": "say", "room": room, "text": WIDE_TEXT, "id": f"s{i}"}
                      for i in range(start, min(count, start + 100))])
        writer.reply_to(f"s{min(count, start + 100) - 1}", timeout=30)
        writer.pending.clear()
    writer.request("quit")


def test_a_reply_bigger_than_the_queue_bound_drops_no_one_who_reads(live):
    fill_room(live.address, "big", 500)
    talker = Client(live.address)
    talker.hello("talker")
    talker.join("big")
    reader = Client(live.address)
    reader.hello("reader")
    # The recovering join's reply is 500 msgs of 24 KiB: 12 MB, three times the bound.
    reader.send({"op": "join", "room": "big", "after": 0, "id": "j"},
                {"op": "history", "room": "big", "limit": 100, "id": "h"},
                {"op": "ping", "id": "p"})
    # A message to the room while that reply is still queued: it is not a reply, so it
    # counts against the bound, but the reply does not.
    talker.recv_until(lambda f: f.get("op") == "presence" and f["nick"] == "reader")
    assert talker.request("say", room="big", text="live")["seq"] == 501
    joined = reader.reply_to("j", timeout=30)
    assert joined["op"] == "ok" and joined["recovered"] is True
    assert [m["seq"] for m in joined["history"]] == list(range(1, 501))
    assert len(reader.reply_to("h", timeout=30)["messages"]) == 100
    assert reader.reply_to("p", timeout=30) == {"op": "ok", "id": "p"}
    assert [(f["op"], f.get("text")) for f in reader.pending] == [("msg", "live")]


def test_a_client_that_asks_for_much_and_never_reads_is_bounded_then_dropped(live):
    fill_room(live.address, "big", 100)
    hog = never_reading(live.address)
    hog.hello("hog")
    hog.join("big")
    # 50 pages of 2.4 MB asked for at once, never read: the server stops reading its
    # requests once its queue passes half the bound, so what it holds stays bounded.
    hog.send(*[{"op": "history", "room": "big", "limit": 100} for _ in range(50)])
    bound = 4 * 2**20
    largest_reply = 100 * 24_832
    peak = 0
    with gevent.Timeout(10, AssertionError("the server never stopped reading the hog")):
        previous = -1
        while True:  # until the queue stops growing
            queued = stats(live.address)["queued_bytes"]
            peak = max(peak, queued)
            if queued == previous and queued > 0:
                break
            previous = queued
            gevent.sleep(0.2)
    assert peak <= bound // 2 + largest_reply
    # Messages to the room are not replies: they count, and the hog is dropped.
    talker = Client(live.address)
    talker.hello("talker")
    talker.join("big")
    with gevent.Timeout(20, AssertionError("the hog was never dropped")):
        while "hog" in talker.request("who", room="big")["members"]:
            talker.send(*[{"op": "say", "room": "big", "text": WIDE_TEXT} for _ in range(20)])
            talker.drain()


def test_a_member_that_does_not_read_holds_up_a_room_only_briefly(spawn_live):
    # A pace limit far above the stall bound: pacing must give up on a member whose
    # socket takes nothing after PACE_STALL (0.1 s), not after the pace limit.
    live = spawn_live("--pace-limit", "30")
    hog = never_reading(live.address)
    hog.hello("hog")
    hog.join("busy")
    # Whispers to itself, unread, fill its socket and then half its queue bound (where
    # the server stops reading its requests).
    with gevent.Timeout(20, AssertionError("the hog's queue never reached half its bound")):
        while stats(live.address)["queued_bytes"] < 2 * 2**20:
            hog.send(*[{"op": "whisper", "to": "hog", "text": WIDE_TEXT} for _ in range(4)])
    talker = live.client("talker")
    talker.join("busy")
    started = time.monotonic()
    for n in range(5):
        talker.send({"op": "say", "room": "busy", "text": f"m{n}", "id": n})
        assert talker.reply_to(n, timeout=60)["op"] == "ok"
    # Waiting for the hog until the pace limit would take 30 s for the first say alone.
    assert time.monotonic() - started < 10
