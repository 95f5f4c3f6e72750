"""Load against a live server: nothing acknowledged is lost (PROTOCOL.md 6, guarantees
1 and 2), and once every client is gone the server is back where it started (guarantee
4: no leaked sessions, rooms, file descriptors or memory).

`make soak` runs these same tests bigger and longer: GCHAT_SOAK_CLIENTS subscribers and
GCHAT_SOAK_SECONDS of load (defaults here: 40 and 2 s, part of `make test`).
"""

from __future__ import annotations

import os
import random
import socket
import time

import gevent

from tests.rawclient import Closed

SUBSCRIBERS = int(os.environ.get("GCHAT_SOAK_CLIENTS", "40"))
SECONDS = float(os.environ.get("GCHAT_SOAK_SECONDS", "2"))
PUBLISHERS = max(2, SUBSCRIBERS // 10)
ROOMS = max(1, SUBSCRIBERS // 20)
RATE = 1000 / PUBLISHERS  # says per second per publisher: 1,000 says/s in all
RSS_BOUND = 32 * 2**20  # growth allowed after the load, once every client is gone


class Subscriber:
    """Reads everything, keeps each room's msg seqs in arrival order."""

    def __init__(self, live, index: int) -> None:
        self.client = live.client(f"sub{index}")
        self.room = f"#load{index % ROOMS}"
        self.first = self.client.join(self.room).get("history", [])
        self.seqs: list[int] = []
        self.texts: dict[int, str] = {}
        self.bye: str | None = None
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                frame = self.client.recv(timeout=60)
                if frame["op"] == "msg":
                    self.seqs.append(frame["seq"])
                    self.texts[frame["seq"]] = frame["text"]
                elif frame["op"] == "ping":
                    self.client.send({"op": "pong"})  # or the idle timeout ends a long soak
                elif frame["op"] == "bye":
                    self.bye = frame["reason"]
        except (Closed, OSError):
            self.bye = self.bye or "closed"

    def kept_up(self) -> bool:
        """False if the server dropped it (a slow consumer: the test process lagged)."""
        return self.bye is None


def publish(live, index: int, acked: dict[str, dict[int, str]], deadline: float) -> None:
    client = live.client(f"pub{index}")
    room = f"#load{index % ROOMS}"
    client.join(room)
    sent = 0
    next_at = time.monotonic()
    while next_at < deadline:
        gevent.sleep(max(0.0, next_at - time.monotonic()))
        sent += 1
        text = f"{index}:{sent}"
        reply = client.request("say", room=room, text=text)
        assert reply["op"] == "ok", reply
        acked[room][reply["seq"]] = text
        next_at += 1 / RATE
    client.request("quit")


def wait_until(condition, timeout: float, message: str) -> None:
    with gevent.Timeout(timeout, AssertionError(message)):
        while not condition():
            gevent.sleep(0.05)


def test_nothing_acknowledged_is_lost_and_nothing_leaks(live):
    # Warm up (imports, first allocations), then note where the server starts.
    warmup = live.client("warmup")
    warmup.close()
    start = live.stats()
    # The probe that asked for the stats is gone from the server once only the listening
    # socket is left: then count.
    wait_until(lambda: sum(f.startswith("socket:") for f in live.open_files()) == 1, 10, "no quiet start")
    fds0, rss0, files0 = live.fds(), live.rss(), live.open_files()

    subscribers = [Subscriber(live, index) for index in range(SUBSCRIBERS)]
    acked: dict[str, dict[int, str]] = {f"#load{r}": {} for r in range(ROOMS)}
    deadline = time.monotonic() + SECONDS
    publishers = [gevent.spawn(publish, live, index, acked, deadline) for index in range(PUBLISHERS)]
    gevent.joinall(publishers, raise_error=True)

    # Every subscriber kept up: it must hold every acknowledged say of its room, in seq
    # order, no gap, no duplicate.
    total = sum(len(room) for room in acked.values())
    for subscriber in subscribers:
        last = max(acked[subscriber.room], default=0)
        wait_until(lambda s=subscriber, n=last: not s.kept_up() or (s.seqs[-1] if s.seqs else 0) >= n,
                   30, f"{subscriber.room}: not every msg arrived")
        if not subscriber.kept_up():
            assert subscriber.bye == "slow_consumer", subscriber.bye
            continue
        assert subscriber.seqs == list(range(1, last + 1)), "a gap, a duplicate or a reordering"
        for seq, text in acked[subscriber.room].items():
            assert subscriber.texts[seq] == text
    rss_peak = live.rss()
    kept_up = [s for s in subscribers if s.kept_up()]
    delivered = sum(len(s.seqs) for s in kept_up)
    print(f"\n{PUBLISHERS} publishers, {SUBSCRIBERS} subscribers in {ROOMS} rooms, {SECONDS:g} s: "
          f"{total} says acknowledged; {len(kept_up)} subscribers kept up and received all "
          f"{delivered} deliveries owed to them, lost 0; "
          f"{SUBSCRIBERS - len(kept_up)} dropped as slow consumers")
    # The test's own clients keep up at this size: a drop here means a bug, not a lag.
    assert len(kept_up) == SUBSCRIBERS or "GCHAT_SOAK_CLIENTS" in os.environ

    # Everyone leaves, some politely, some not.
    for index, subscriber in enumerate(subscribers):
        subscriber.reader.kill()
        if index % 3 == 0:
            subscriber.client.request("quit")
        elif index % 3 == 1:
            subscriber.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              b"\x01\x00\x00\x00\x00\x00\x00\x00")
        subscriber.client.close()
    wait_until(lambda: live.stats()["sessions"] == start["sessions"], 30, "sessions were not released")
    after = live.stats()
    assert after["registered"] == start["registered"]
    # Rooms without members or history are gone; the load rooms have history, so stay.
    assert after["rooms"] == start["rooms"]
    assert after["queued_bytes"] == after["queued_frames"] == 0
    wait_until(lambda: live.fds() == fds0, 10,
               f"file descriptors were not released: {files0} before, now {live.open_files()}")
    rss = live.rss()
    print(f"server RSS: {rss0 / 2**20:.1f} MiB before, {rss_peak / 2**20:.1f} MiB at the peak, "
          f"{rss / 2**20:.1f} MiB after; file descriptors back to {fds0}")
    assert rss - rss0 < RSS_BOUND


def test_rooms_without_history_are_gone_once_empty(live):
    before = live.stats()["rooms"]
    clients = []
    for index in range(50):
        client = live.client(f"visitor{index}")
        client.join(f"#empty{random.randrange(10)}")
        clients.append(client)
    assert live.stats()["rooms"] > before
    for client in clients:
        client.close()
    wait_until(lambda: live.stats()["rooms"] == before, 10, "empty rooms were kept")
