"""Faults against a live server (PROTOCOL.md 6, guarantees 3 and 4): half-closes,
floods past the limits, and a thousand clients joining, leaving and renaming at once.
(Disconnects mid-frame, resets, slow consumers and idle timeouts are covered in
tests/server/test_guarantees.py; docs/reliability.md maps each guarantee to its tests.)"""

from __future__ import annotations

import socket

import gevent
from gevent.pool import Pool

from tests.rawclient import Client, Closed


def wait_until(condition, timeout: float = 10.0, message: str = "condition never held") -> None:
    """Poll `condition` (a server-side count read over the protocol) until it holds."""
    with gevent.Timeout(timeout, AssertionError(message)):
        while not condition():
            gevent.sleep(0.02)


def test_a_half_closed_client_gets_every_reply_then_the_server_closes(live):
    watcher = live.client("watcher")
    watcher.join("#half")
    client = Client(live.address)
    client.send({"op": "hello", "nick": "halfway", "id": 1}, {"op": "join", "room": "#half", "id": 2},
                {"op": "say", "room": "#half", "text": "bye for now", "id": 3})
    client.sock.shutdown(socket.SHUT_WR)  # no more requests, still reading
    frames = client.read_until_closed()
    assert [f.get("id") for f in frames if f["op"] == "ok"] == [1, 2, 3]
    assert [f["text"] for f in frames if f["op"] == "msg"] == ["bye for now"]
    got = watcher.recv_until(lambda f: f.get("event") == "quit")
    assert [f["nick"] for f in got if f["op"] == "presence"] == ["halfway", "halfway"]  # join, quit
    assert live.stats()["registered"] == 2  # the watcher and the probe


def test_a_connection_flood_past_the_limits_leaves_existing_sessions_unharmed(spawn_live):
    live = spawn_live("--max-clients", "20", "--max-connections", "30")
    alice, bob = live.client("alice"), live.client("bob")
    alice.join("#calm")
    bob.join("#calm")
    flood: list[Client] = []
    outcomes = {"ok": 0, "server_full": 0, "refused": 0}
    for index in range(40):
        try:
            client = Client(live.address)
            flood.append(client)
            reply = client.request("hello", nick=f"flood{index}")
            outcomes["ok" if reply["op"] == "ok" else reply["code"]] += 1
        except (Closed, OSError):
            outcomes["refused"] += 1  # past --max-connections: bye server_full, then closed
    print(f"flood of 40: {outcomes}")
    assert outcomes == {"ok": 18, "server_full": 10, "refused": 12}
    # The two sessions that were there keep talking.
    assert alice.request("say", room="#calm", text="still fine")["op"] == "ok"
    assert bob.recv_until(lambda f: f["op"] == "msg")[-1]["text"] == "still fine"
    for client in flood:
        client.close()
    # Asked by alice: a fresh probe could itself be refused while the slots are still
    # held, which is what is being waited for.
    wait_until(lambda: alice.request("stats")["sessions"] == 2,
               message="flood sessions were not released")


def test_a_thousand_clients_churning_leave_every_view_equal_to_who(live):
    rooms = [f"#churn{i}" for i in range(5)]
    observers, views = [], []
    for index, room in enumerate(rooms):
        observer = live.client(f"observer{index}")
        views.append(set(observer.join(room)["members"]))
        observers.append(observer)
    clients: list[Client] = []

    def churn(index: int) -> None:
        client = Client(live.address)
        clients.append(client)
        client.hello(f"c{index}")
        room = rooms[index % len(rooms)]
        client.join(room)
        action = index % 5
        if action == 1:
            assert client.request("leave", room=room)["op"] == "ok"
        elif action == 2:
            assert client.request("nick", nick=f"renamed{index}")["op"] == "ok"
        elif action == 3:
            client.request("quit")
        elif action == 4:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # a reset, mid-life

    pool = Pool(1000)
    for index in range(1000):
        pool.spawn(churn, index)
    pool.join(raise_error=True)
    # Everyone still connected (actions 0, 1 and 2) plus the observers and the probe.
    wait_until(lambda: live.stats()["registered"] == 600 + len(rooms) + 1, timeout=20,
               message="the server did not settle")
    events = 0
    for observer, view, room in zip(observers, views, rooms, strict=True):
        for frame in observer.drain() + list(observer.pending):
            if frame["op"] != "presence":
                continue
            events += 1
            if frame["event"] == "join":
                assert frame["nick"] not in view
                view.add(frame["nick"])
            elif frame["event"] in ("leave", "quit"):
                view.remove(frame["nick"])  # a KeyError is a quit for someone not there
            elif frame["event"] == "rename":
                view.remove(frame["old"])
                view.add(frame["nick"])
        assert view == set(observer.request("who", room=room)["members"]), room
    print(f"1000 clients churned in {len(rooms)} rooms: {events} presence events, every view equals who")
    for client in clients:
        client.close()
