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

from tests.soakclient import Soak, load_and_check, reporting, wait_until

SUBSCRIBERS = int(os.environ.get("GCHAT_SOAK_CLIENTS", "40"))
SECONDS = float(os.environ.get("GCHAT_SOAK_SECONDS", "2"))
PUBLISHERS = max(2, SUBSCRIBERS // 10)
ROOMS = max(1, SUBSCRIBERS // 20)
RATE = 1000 / PUBLISHERS  # says per second per publisher: 1,000 says/s in all
RSS_BOUND = 32 * 2**20  # growth allowed after the load, once every client is gone
ROOM_NAMES = [f"#load{r}" for r in range(ROOMS)]


def test_nothing_acknowledged_is_lost_and_nothing_leaks(live):
    # Warm up (imports, first allocations), then note where the server starts.
    warmup = live.client("warmup")
    warmup.close()
    start = live.stats()
    # The probe that asked for the stats is gone from the server once only the listening
    # socket is left: then count.
    wait_until(lambda: sum(f.startswith("socket:") for f in live.open_files()) == 1, 10, "no quiet start")
    fds0, rss0, files0 = live.fds(), live.rss(), live.open_files()

    soak = Soak("server", [live.process], ROOM_NAMES, RATE, SECONDS)
    with reporting(soak):
        # Every subscriber keeps up (the test's clients are light: a drop is a bug, not
        # a lag) and holds every acknowledged say of its room, in seq order, no gap, no
        # duplicate, each with its text.
        load_and_check(soak, lambda _: live.address, lambda _: live.address, SUBSCRIBERS, PUBLISHERS, ROOMS)
        rss_peak = live.rss()

        # Everyone leaves, some politely, some not.
        soak.phase = "teardown"
        for index, subscriber in enumerate(soak.subscribers):
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
        soak.note(f"server RSS: {rss0 / 2**20:.1f} MiB before, {rss_peak / 2**20:.1f} MiB at the peak, "
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
