"""PROTOCOL.md 6, guarantee 2 with the default (SQLite) store: what got `ok` survives a
restart and a kill -9, seq continues, and a failing or unusable store is a clear error."""

from __future__ import annotations

import signal
import sqlite3

import gevent
import pytest

from tests.rawclient import Client, Closed
from tests.server.process import run

FAST = ("--rate", "100000", "--burst", "100000")


def history_of(client: Client, room: str) -> list[dict]:
    """Every stored message of `room`, paged with `after` as a client would."""
    messages: list[dict] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        reply = client.request("history", room=room, after=after, limit=100)
        assert reply["op"] == "ok", reply
        if not reply["messages"]:
            return messages
        messages += reply["messages"]


def test_history_rooms_and_seq_survive_a_restart(spawn_server):
    first = spawn_server()
    alice = first.client("alice")
    alice.join("#keep")
    alice.join("passing")  # no messages: it ends with its last member
    delivered = []
    for text in ("one", "two", "three"):
        alice.request("say", room="#keep", text=text)
        delivered.append(alice.recv_until(lambda f: f["op"] == "msg")[-1])
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0

    second = spawn_server()
    bob = second.client("bob")
    assert bob.request("rooms")["rooms"] == [{"room": "#keep", "members": 0}]
    assert bob.request("who", room="#keep")["members"] == []
    joined = bob.join("#keep")
    assert joined["history"] == delivered  # exactly the msg events as delivered
    assert bob.request("say", room="#keep", text="four")["seq"] == 4  # seq continues
    assert [m["text"] for m in history_of(bob, "#keep")] == ["one", "two", "three", "four"]
    assert bob.request("history", room="#keep", before=3, limit=1)["messages"] == [delivered[1]]
    assert bob.join("#keep", after=1)["history"][0] == delivered[1]  # a rejoin recovers


def test_a_lower_max_history_rooms_trims_the_store_at_start(spawn_server):
    first = spawn_server(*FAST)
    alice = first.client("alice")
    for i in range(12):
        alice.join(f"r{i:02d}")
        alice.request("say", room=f"r{i:02d}", text="kept")
        alice.request("leave", room=f"r{i:02d}")
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0

    second = spawn_server(*FAST, "--max-history-rooms", "5")
    bob = second.client("bob")
    with gevent.Timeout(10, AssertionError("the store was never trimmed")):
        while len(names := [r["room"] for r in bob.request("rooms")["rooms"]]) > 5:
            gevent.sleep(0.05)
    assert names == [f"r{i:02d}" for i in range(7, 12)]  # the most recently written


def test_every_acknowledged_say_survives_kill_9_under_load(spawn_server):
    server = spawn_server(*FAST)
    rooms = [f"load{i}" for i in range(4)]
    acked: dict[str, dict[int, str]] = {room: {} for room in rooms}
    enough = gevent.event.Event()

    def publish(room: str, index: int) -> None:
        client = server.client(f"pub{index}")
        client.join(room)
        window, sent = 16, 0

        def say() -> None:
            nonlocal sent
            sent += 1
            client.send({"op": "say", "room": room, "text": f"{room} {index} {sent}", "id": sent})

        for _ in range(window):
            say()
        try:
            while True:
                frame = client.recv(timeout=10)
                if frame["op"] == "ok":
                    acked[room][frame["seq"]] = f"{room} {index} {frame['id']}"
                    if sum(map(len, acked.values())) >= 3000:
                        enough.set()
                    say()
                else:
                    assert frame["op"] in ("msg", "presence"), frame
        except (Closed, OSError):
            pass  # the server was killed: the says in flight were never acknowledged

    publishers = [gevent.spawn(publish, room, index) for index, room in enumerate(rooms * 2)]
    assert enough.wait(30), "the load never reached 3000 acknowledged says"
    server.kill()  # SIGKILL while the publishers keep sending
    gevent.joinall(publishers, timeout=15, raise_error=True)

    restarted = spawn_server(*FAST)
    reader = restarted.client("reader")
    total_acked = total_stored = 0
    for room in rooms:
        stored = {m["seq"]: m["text"] for m in history_of(reader, room)}
        assert list(stored) == list(range(1, len(stored) + 1)), "seqs are consecutive from 1"
        missing = {seq: text for seq, text in acked[room].items() if stored.get(seq) != text}
        assert not missing, f"acknowledged but lost in {room}: {missing}"
        total_acked += len(acked[room])
        total_stored += len(stored)
        reader.join(room)
        assert reader.request("say", room=room, text="after")["seq"] == len(stored) + 1
    print(f"kill -9 under load: {total_acked} says acknowledged, all {total_acked} found after "
          f"restart; {total_stored - total_acked} more were stored but not yet acknowledged")


def test_a_failing_store_refuses_the_say_and_loses_no_seq(server, connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("r")
    bob.join("r")
    assert alice.request("say", room="r", text="stored")["seq"] == 1
    bob.recv_until(lambda f: f["op"] == "msg")
    store = server.store
    # A real SQLite failure: the writer may not grow the file any more (SQLITE_FULL).
    store._pool.apply(lambda: store._writer.execute("PRAGMA max_page_count = 1").fetchall())
    reply = alice.request("say", room="r", text="x" * 4000)
    assert (reply["op"], reply["code"]) == ("error", "unavailable")
    assert "Traceback" not in reply["message"]
    assert bob.drain() == []  # nobody saw the message that was not stored
    store._pool.apply(lambda: store._writer.execute("PRAGMA max_page_count = 1073741823").fetchall())
    assert alice.request("say", room="r", text="again")["seq"] == 2  # no gap
    assert [f["seq"] for f in bob.drain()] == [2]
    assert [m["text"] for m in history_of(alice, "r")] == ["stored", "again"]


def test_a_database_deleted_under_the_server_fails_says_and_is_logged_once(spawn_server, private_store):
    # Issue 12: says kept getting `ok` into the unlinked file and vanished at the restart.
    server = spawn_server()
    alice = server.client("alice")
    alice.join("r")
    assert alice.request("say", room="r", text="stored")["seq"] == 1
    private_store.unlink()
    private_store.with_name(private_store.name + ".lock").unlink()
    for text in ("one", "two", "three", "four"):
        reply = alice.request("say", room="r", text=text)
        assert (reply["op"], reply["code"]) == ("error", "unavailable"), reply
    assert alice.request("ping")["op"] == "ok"  # the server itself goes on
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish() == 0
    line = b"ERROR gchat.server.sqlite_store: history: %s was removed or replaced" % bytes(private_store)
    assert server.log.count(line) == 1, server.log.decode()
    assert server.log.count(b"removed or replaced") == 1
    assert b"Traceback" not in server.log


def test_a_corrupt_database_is_a_clear_startup_error(private_store):
    private_store.write_bytes(b"\x00garbage" * 1000)
    result = run("--port", "0")
    assert result.returncode == 1
    assert b"is not a usable gchat database" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_database_in_use_is_a_clear_startup_error(spawn_server, private_store):
    spawn_server()
    result = run("--port", "0")
    assert result.returncode == 1
    assert b"in use by another gchat server" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_database_locked_by_another_program_is_a_clear_startup_error(spawn_server, private_store):
    spawn_server().kill()  # leaves a gchat database behind
    holder = sqlite3.connect(private_store, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run("--port", "0")
    finally:
        holder.close()
    assert result.returncode == 1
    assert b"locked by another program" in result.stderr
    assert b"Traceback" not in result.stderr


def test_an_unopenable_path_is_a_clear_startup_error(tmp_path):
    result = run("--port", "0", "--store", f"sqlite:{tmp_path}")
    assert result.returncode == 1 and b"is a directory" in result.stderr
    blocked = tmp_path / "file"
    blocked.write_text("a file where a directory should be")
    result = run("--port", "0", "--store", f"sqlite:{blocked}/gchat.db")
    assert result.returncode == 1 and b"cannot open history database" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [("--store", "postgres://x"), ("--store", "sqlite:"),
                                   ("--store-sync", "sometimes")])
def test_bad_store_flags_are_usage_errors(flags):
    result = run("--port", "0", *flags)
    assert result.returncode == 2
    assert b"--store" in result.stderr and b"Traceback" not in result.stderr
