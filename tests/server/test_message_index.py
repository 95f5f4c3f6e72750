"""SqliteHistory's message_chunks, filled a room at a time with the batches (ROOM_BATCH
messages, or INDEX_AGE old): reads see every stored message whether it is indexed yet
or not, pruning and forgetting keep the file consistent, and what a crash left
unindexed is indexed at the next start."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import gevent
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gchat.errors import StoreError
from gchat.server import sqlite_store
from gchat.server.history import MemoryHistory
from gchat.server.sqlite_store import SqliteHistory

ROOMS = ("a", "#b", "c")


def event(room: str, seq: int) -> bytes:
    return b'{"op":"msg","room":"%s","seq":%d}' % (room.encode(), seq)


def index_now(store: SqliteHistory) -> None:
    """Index every room's unindexed messages now (as closing does)."""
    with store._writing:
        store._index_everything()


def rows(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return (db.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
                db.execute("SELECT COALESCE(SUM(json_array_length(ids)), 0) FROM message_chunks"
                           ).fetchone()[0])


def indexed_by_room(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT room, SUM(json_array_length(ids)) FROM message_chunks "
                               "GROUP BY room"))


_append = st.tuples(st.just("append"), st.lists(st.sampled_from(ROOMS), min_size=1, max_size=15))
_read = st.tuples(st.sampled_from(["latest", "after", "before"]), st.sampled_from(ROOMS),
                  st.integers(0, 30), st.integers(0, 12))
_other = st.tuples(st.sampled_from(["index", "reopen", "crash"])) | st.tuples(st.just("forget"),
                                                                     st.sampled_from(ROOMS))


@settings(max_examples=100, deadline=None)
@given(st.lists(_append | _read | _other, max_size=40), st.integers(1, 30), st.integers(2, 12),
       st.sampled_from([0.0, 60.0]), st.integers(1, 8))
@example([("append", ["a"] * 5), ("append", ["a"] * 2), ("after", "a", 0, 12)], 8, 4, 60.0, 64)
@example([("append", ["a"] * 9), ("index",), ("append", ["a"] * 3), ("index",), ("reopen",),
          ("latest", "a", 0, 12), ("after", "a", 4, 5), ("before", "a", 9, 4)], 7, 4, 60.0, 3)
def test_reads_match_the_memory_store_whatever_is_indexed(operations, history_max, room_batch,
                                                         index_age, chunk):
    saved = sqlite_store.ROOM_BATCH, sqlite_store.INDEX_AGE, sqlite_store.CHUNK
    sqlite_store.ROOM_BATCH, sqlite_store.INDEX_AGE, sqlite_store.CHUNK = (
        room_batch, index_age, chunk)
    try:
        _compare_with_memory(operations, history_max)
    finally:
        sqlite_store.ROOM_BATCH, sqlite_store.INDEX_AGE, sqlite_store.CHUNK = saved


def _compare_with_memory(operations, history_max) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "h.db"
        store, oracle = SqliteHistory(path, history_max), MemoryHistory(history_max)
        try:
            for operation in operations:
                kind = operation[0]
                if kind == "append":
                    batch = []
                    following = {room: oracle.last_seq(room) for room in ROOMS}
                    for room in operation[1]:
                        following[room] += 1
                        batch.append((room, following[room], event(room, following[room])))
                    store.append_batch(batch)
                    oracle.append_batch(batch)
                elif kind == "index":
                    index_now(store)
                elif kind == "reopen":
                    store.close()
                    store = SqliteHistory(path, history_max)
                elif kind == "crash":  # memory lost: what is unindexed is indexed at the start
                    store._tail, store._tail_count, store._prune = {}, 0, {}
                    store.close()
                    store = SqliteHistory(path, history_max)
                elif kind == "forget":
                    store.forget([operation[1]])
                    oracle.forget([operation[1]])
                else:
                    _, room, seq, limit = operation
                    args = (room, limit) if kind == "latest" else (room, seq, limit)
                    assert getattr(store, kind)(*args) == getattr(oracle, kind)(*args), operation
                for room in ROOMS:
                    assert (store.first_seq(room), store.last_seq(room)) == (
                        oracle.first_seq(room), oracle.last_seq(room))
        finally:
            store.close()
        _healthy(path)  # and no chunk longer than CHUNK, none overlapping another
        with sqlite3.connect(path) as db:
            chunks = db.execute("SELECT room, first, last, json_array_length(ids) "
                                "FROM message_chunks ORDER BY room, first").fetchall()
        for _, first, last, size in chunks:
            assert size == last - first + 1 <= sqlite_store.CHUNK
        for (room, _, last, _), (following_room, following_first, _, _) in pairwise(chunks):
            assert following_room != room or following_first > last


def test_pruned_messages_leave_the_file_when_indexed(tmp_path):
    path = tmp_path / "h.db"
    store = SqliteHistory(path, history_max=5)
    try:
        store.append_batch([("r", seq, event("r", seq)) for seq in range(1, 21)])
        assert store.first_seq("r") == 16 and store.after("r", 0, 100) == [
            event("r", seq) for seq in range(16, 21)]
        assert rows(path) == (20, 0)  # nothing indexed yet: pruned in memory only
        index_now(store)
        assert rows(path) == (5, 5)
        assert store.latest("r", 100) == [event("r", seq) for seq in range(16, 21)]
    finally:
        store.close()


def test_a_forgotten_room_starts_again_at_seq_1_and_the_others_stay_whole(tmp_path):
    path = tmp_path / "h.db"
    store = SqliteHistory(path)
    try:
        store.append_batch([("old", 1, event("old", 1)), ("kept", 1, event("kept", 1))])
        index_now(store)
        store.append_batch([("kept", 2, event("kept", 2)), ("old", 2, event("old", 2))])
        store.forget(["old"])  # its newest rows were the file's last: their rowids come again
        store.append_batch([("old", 1, event("old", 1)), ("kept", 3, event("kept", 3))])
        store.close()
        store = SqliteHistory(path)
        assert store.latest("old", 10) == [event("old", 1)]
        assert store.latest("kept", 10) == [event("kept", seq) for seq in (1, 2, 3)]
        assert rows(path) == (4, 4)
    finally:
        store.close()


_CRASH = """
import os, sys
from gchat.server.sqlite_store import SqliteHistory
store = SqliteHistory(sys.argv[1])
for seq in range(1, 101):
    store.append_batch([("r", seq, b'{"seq":%d}' % seq)])
print("stored", flush=True)
os._exit(0)  # no close, no indexer yet: as if killed
"""


def test_messages_a_crash_left_unindexed_are_indexed_at_the_next_start(tmp_path):
    path = tmp_path / "h.db"
    done = subprocess.run([sys.executable, "-c", _CRASH, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout == "stored\n", done.stderr
    assert rows(path)[0] == 100 and rows(path)[1] < 100  # some were not indexed
    store = SqliteHistory(path)
    try:
        assert store.last_seq("r") == 100
        assert store.after("r", 95, 10) == [b'{"seq":%d}' % seq for seq in range(96, 101)]
        assert rows(path) == (100, 100)
    finally:
        store.close()


def _healthy(path: Path) -> None:
    """The file reopens, and every message in it is indexed once, at its own seq."""
    store = SqliteHistory(path)
    store.close()
    with sqlite3.connect(path) as db:
        indexed = sorted(db.execute(
            "SELECT c.room, c.first + j.key, j.value FROM message_chunks c, json_each(c.ids) j"))
        assert indexed == sorted(db.execute("SELECT room, seq, rowid FROM messages"))


@contextlib.contextmanager
def checked_store(path: Path, **options: Any) -> Iterator[SqliteHistory]:
    """A store on `path`, closed at the end of the block; then the file is checked
    (`_healthy`)."""
    store = SqliteHistory(path, **options)
    try:
        yield store
    finally:
        store.close()
    _healthy(path)


def test_a_room_said_to_while_its_history_is_being_forgotten_gets_no_second_seq_1(tmp_path):
    # A review found it: forget() had dropped the room's seqs from memory before it
    # waited for the writer; a batch that took the writer first stored a new seq 1
    # beside the old one, and the next indexing (and every start after) failed.
    path = tmp_path / "h.db"
    with checked_store(path) as store:
        store.append_batch([("x", 1, event("x", 1)), ("y", 1, event("y", 1))])
        outcomes = []

        def committer() -> None:
            store._wal_may_restart = True  # this batch goes to the writer thread
            store.append_batch([("y", 2, event("y", 2))])
            try:  # x made again by a join meanwhile: its first say is seq 1
                store.append_batch([("x", 1, b"new")])
                outcomes.append("stored")
            except StoreError as exc:
                outcomes.append(str(exc))

        def trim() -> None:
            store.forget(["x"])

        gevent.joinall([gevent.spawn(committer), gevent.spawn_later(0.0001, trim)],
                       raise_error=True)
        assert outcomes == ["the history of x is being deleted; try again"]
        assert store.latest("x", 10) == [] and store.last_seq("x") == 0
        store.append_batch([("x", 1, b"new")])  # once it is deleted, seq 1 is x's next
        assert store.latest("x", 10) == [b"new"]


def test_a_forget_that_fails_keeps_the_room_and_refuses_its_says_meanwhile(tmp_path):
    path = tmp_path / "h.db"
    with checked_store(path) as store:
        store.append_batch([("x", seq, event("x", seq)) for seq in (1, 2, 3)])
        index_now(store)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)  # gchat-admin, say
        other.execute("BEGIN IMMEDIATE")
        failures = []

        def forget() -> None:
            with pytest.raises(StoreError, match="locked"):
                store.forget(["x"])  # waits out the busy timeout (2 s), then fails

        def say() -> None:
            try:
                store.append_batch([("x", 1, b"new")])
            except StoreError as exc:
                failures.append(str(exc))

        gevent.joinall([gevent.spawn(forget), gevent.spawn_later(0.3, say)], raise_error=True)
        other.execute("COMMIT")
        other.close()
        # It waited for the writer, which the forget held; the forget failed, so x's
        # history is back, and seq 1 is not its next.
        assert failures == ["message 1 of x is not its next (the batch was not stored)"]
        assert store.latest("x", 10) == [event("x", seq) for seq in (1, 2, 3)]
        store.append_batch([("x", 4, event("x", 4))])
        index_now(store)


def test_forgetting_a_room_runs_in_the_writer_thread(tmp_path):
    # A room may hold history_max rows: deleting them must not stall the event loop.
    import threading

    store = SqliteHistory(tmp_path / "h.db")
    threads = []
    delete_rooms = store._delete_rooms

    def recording(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return delete_rooms(*args)

    store._delete_rooms = recording
    try:
        store.append_batch([("x", 1, event("x", 1))])
        store._wal_may_restart = False  # what would let a commit run in the event loop
        store.forget(["x"])
        assert threads == [False]
    finally:
        store.close()


def test_a_busy_room_is_indexed_every_room_batch_and_a_quiet_one_once_it_is_old(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "INDEX_AGE", 0.2)
    path = tmp_path / "h.db"
    with checked_store(path) as store:
        store.append_batch([("quiet", 1, event("quiet", 1))])
        for seq in range(1, sqlite_store.ROOM_BATCH + 1):
            store.append_batch([("busy", seq, event("busy", seq))])
        assert indexed_by_room(path) == {"busy": sqlite_store.ROOM_BATCH}  # with its 64th
        time.sleep(0.25)
        store.append_batch([("busy", sqlite_store.ROOM_BATCH + 1, b"x")])  # any batch will do
        assert indexed_by_room(path) == {"busy": sqlite_store.ROOM_BATCH, "quiet": 1}


def test_a_forget_killed_while_the_writer_thread_runs_it_leaves_a_consistent_file(tmp_path):
    # A review found it: closing indexed from memory, which the killed forget had not
    # updated: its rooms' deleted rows came back in the index, pointing at other
    # rooms' messages once their rowids were used again.
    path = tmp_path / "h.db"
    store = SqliteHistory(path)
    store.append_batch([("x", 1, b"x1"), ("y", 1, b"y1")])
    store.append_batch([("x", 2, b"x2")])
    delete_rooms = store._delete_rooms

    def slow(*args):
        time.sleep(0.3)  # a forget of many rows, in the writer thread
        return delete_rooms(*args)

    store._delete_rooms = slow
    forgetting = gevent.spawn(store.forget, ["x"])
    gevent.sleep(0.05)
    forgetting.kill()  # the server stopping kills the history trim
    store.close()
    _healthy(path)
    store = SqliteHistory(path)
    try:
        assert store.rooms() == ["y"] and store.latest("x", 10) == []
        store.append_batch([("z", 1, b"z1"), ("z", 2, b"z2"), ("z", 3, b"z3")])
    finally:
        store.close()
    store = SqliteHistory(path)
    try:
        assert store.latest("x", 10) == [] and store.latest("z", 10) == [b"z1", b"z2", b"z3"]
    finally:
        store.close()


def test_a_read_while_a_batch_commits_in_the_writer_thread_sees_every_kept_message(tmp_path):
    # A review found it: a batch that indexed its room also deleted the room's rows it
    # pruned, before the first seq the reads use had moved.
    store = SqliteHistory(tmp_path / "h.db", history_max=100, synchronous="full")
    oracle = MemoryHistory(100)
    try:
        for batch in ([("x", seq, b"%d" % seq) for seq in range(1, 101)],
                      [("x", seq, b"%d" % seq) for seq in range(101, 164)]):
            store.append_batch(batch)
            oracle.append_batch(batch)
        write = store._write

        def slow(*args):
            result = write(*args)
            time.sleep(0.3)  # committed; the event loop runs meanwhile
            return result

        store._write = slow
        writing = gevent.spawn(store.append_batch, [("x", 164, b"164")])
        gevent.sleep(0.1)
        assert store.after("x", 0, 3) == oracle.after("x", 0, 3)
        writing.join()
    finally:
        store.close()


def test_a_file_with_the_largest_rowid_taken_refuses_batches_instead_of_misindexing(tmp_path):
    path = tmp_path / "h.db"
    SqliteHistory(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO messages (rowid, room, seq, event) VALUES (?, 'odd', 1, 'x')",
                   (2**63 - 1,))
    store = SqliteHistory(path)
    try:
        with pytest.raises(StoreError, match="largest possible rowid"):
            store.append_batch([("r", 1, event("r", 1)), ("r", 2, event("r", 2))])
        assert store.last_seq("r") == 0
    finally:
        store.close()


def test_unindexed_messages_held_in_memory_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "TAIL_LIMIT", 200)
    store = SqliteHistory(tmp_path / "h.db")
    try:
        for round_ in range(1, 40):  # 50 quiet rooms a batch, none old enough to be indexed
            store.append_batch([(f"r{room}", round_, b"x") for room in range(50)])
            assert store._tail_count <= 200 + 50 + sqlite_store.AGED_PER_BATCH * 63
        assert store._tail_count == sum(len(tail.items) for tail in store._tail.values())
    finally:
        store.close()


def schema_4_file(path: Path, rows: list[tuple[str, int, int | None, bool]], mark: int) -> None:
    """A file as schema 4 left it: messages (room, seq, rowid or None for the next one,
    indexed or not) with unnamed rowids, message_index, and the mark."""
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                    "event BLOB NOT NULL)")
        old.execute("CREATE TABLE message_index (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                    "id INTEGER NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID")
        old.execute("CREATE TABLE message_indexed (id INTEGER NOT NULL)")
        for room, seq, rowid, indexed in rows:
            rowid = old.execute("INSERT INTO messages (rowid, room, seq, event) "
                                "VALUES (?, ?, ?, ?)", (rowid, room, seq, event(room, seq))).lastrowid
            if indexed:
                old.execute("INSERT INTO message_index VALUES (?, ?, ?)", (room, seq, rowid))
        old.execute("INSERT INTO message_indexed VALUES (?)", (mark,))
        old.execute("PRAGMA user_version = 4")


def test_a_schema_4_file_is_indexed_in_chunks_and_keeps_every_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "CHUNK", 64)
    # Schema 4 indexed each message in a row of message_index; rows above its mark (b's
    # last two here) were left unindexed by a crash.
    path = tmp_path / "h.db"
    said = [("a", seq) for seq in range(1, 71)] + [("b", seq) for seq in range(1, 6)]
    schema_4_file(path, [(room, seq, None, (room, seq) not in (("b", 4), ("b", 5)))
                         for room, seq in said], mark=73)
    store = SqliteHistory(path)
    try:
        assert (store.first_seq("a"), store.last_seq("a"), store.last_seq("b")) == (1, 70, 5)
        assert store.latest("a", 70) == [event("a", seq) for seq in range(1, 71)]
        assert store.after("a", 60, 5) == [event("a", seq) for seq in range(61, 66)]
        assert store.latest("b", 10) == [event("b", seq) for seq in range(1, 6)]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'message_index'"
                          ).fetchall() == []
        assert db.execute("SELECT room, first, last FROM message_chunks ORDER BY room, first"
                          ).fetchall() == [("a", 1, 64), ("a", 65, 70), ("b", 1, 3), ("b", 4, 5)]
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store.SCHEMA_VERSION,)
    _healthy(path)


def test_a_file_written_with_longer_chunks_reads_the_same(tmp_path, monkeypatch):
    # A review found it: reads looked for the chunk holding their first seq no further
    # back than the current CHUNK, and a file written with a larger CHUNK lost messages.
    path = tmp_path / "h.db"
    monkeypatch.setattr(sqlite_store, "CHUNK", 64)
    store = SqliteHistory(path)
    store.append_batch([("r", seq, event("r", seq)) for seq in range(1, 101)])
    store.close()
    monkeypatch.setattr(sqlite_store, "CHUNK", 4)
    store = SqliteHistory(path)
    try:
        assert store.after("r", 20, 5) == [event("r", seq) for seq in range(21, 26)]
        assert store.before("r", 70, 3) == [event("r", seq) for seq in range(67, 70)]
        assert store.latest("r", 100) == [event("r", seq) for seq in range(1, 101)]
    finally:
        store.close()


def test_vacuum_keeps_every_message_where_the_index_points(tmp_path):
    # A review found it: with the rowid unnamed, VACUUM renumbered the messages once
    # some were deleted (pruning), and the index then pointed at other messages.
    path = tmp_path / "h.db"
    store = SqliteHistory(path, history_max=10)
    for seq in range(1, 41):
        store.append_batch([("a", seq, event("a", seq)), ("b", seq, event("b", seq))])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    with checked_store(path, history_max=10) as store:
        assert store.latest("a", 3) == [event("a", seq) for seq in (38, 39, 40)]
        assert store.after("b", 30, 10) == [event("b", seq) for seq in range(31, 41)]


def test_a_schema_4_file_gets_named_rowids_and_keeps_them(tmp_path):
    path = tmp_path / "h.db"  # gaps in the rowids: rows deleted by pruning
    schema_4_file(path, [("r", 1, 7, True), ("r", 2, 9, True), ("r", 3, 20, True)], mark=20)
    SqliteHistory(path).close()
    with sqlite3.connect(path) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(messages)")] == [
            "id", "room", "seq", "event"]
        assert db.execute("SELECT id, seq FROM messages ORDER BY id").fetchall() == [
            (7, 1), (9, 2), (20, 3)]
        db.execute("VACUUM")
    store = SqliteHistory(path)
    try:
        assert store.latest("r", 5) == [event("r", seq) for seq in (1, 2, 3)]
    finally:
        store.close()
