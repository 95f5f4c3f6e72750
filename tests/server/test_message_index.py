"""SqliteHistory's message_index, filled about once a second: reads see every stored
message whether it is indexed yet or not, pruning and forgetting wait for nothing, and
what a crash left unindexed is indexed at the next start."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gchat.server.history import MemoryHistory
from gchat.server.sqlite_store import SqliteHistory

ROOMS = ("a", "#b", "c")


def event(room: str, seq: int) -> bytes:
    return b'{"op":"msg","room":"%s","seq":%d}' % (room.encode(), seq)


def index_now(store: SqliteHistory) -> None:
    """What the indexer does once a second, now."""
    store._index_now(store._index_rows)


def rows(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return (db.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM message_index").fetchone()[0])


_append = st.tuples(st.just("append"), st.lists(st.sampled_from(ROOMS), min_size=1, max_size=6))
_read = st.tuples(st.sampled_from(["latest", "after", "before"]), st.sampled_from(ROOMS),
                  st.integers(0, 30), st.integers(0, 12))
_other = st.tuples(st.sampled_from(["index", "reopen"])) | st.tuples(st.just("forget"),
                                                                     st.sampled_from(ROOMS))


@settings(max_examples=60, deadline=None)
@given(st.lists(_append | _read | _other, max_size=40), st.integers(1, 8))
def test_reads_match_the_memory_store_whatever_is_indexed(operations, history_max):
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
    assert rows(path) == (100, 0)
    store = SqliteHistory(path)
    try:
        assert store.last_seq("r") == 100
        assert store.after("r", 95, 10) == [b'{"seq":%d}' % seq for seq in range(96, 101)]
        assert rows(path) == (100, 100)
    finally:
        store.close()
