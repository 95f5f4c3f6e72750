"""SqliteHistory on a real SQLite file: the HistoryStore contract, reopening, and
every way a database file can be unusable."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time

import gevent
import pytest

from gchat.errors import StoreError
from gchat.server import sqlite_store
from gchat.server.events import Topic
from gchat.server.history import MemoryHistory
from gchat.server.sqlite_store import SqliteHistory


def event(room: str, seq: int) -> bytes:
    return b'{"op":"msg","room":"%s","seq":%d}' % (room.encode(), seq)


def fill(store, room: str, first: int, last: int, batch: int = 7) -> None:
    messages = [(room, seq, event(room, seq)) for seq in range(first, last + 1)]
    for start in range(0, len(messages), batch):
        store.append_batch(messages[start:start + batch])


@pytest.fixture
def store(tmp_path):
    store = SqliteHistory(tmp_path / "h.db", history_max=50)
    yield store
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_both_stores_page_history_the_same_way(kind, tmp_path):
    store = SqliteHistory(tmp_path / "h.db", 50) if kind == "sqlite" else MemoryHistory(50)
    try:
        fill(store, "a", 1, 80)
        fill(store, "#b", 1, 3)
        assert (store.first_seq("a"), store.last_seq("a")) == (31, 80)  # pruned to 50
        assert store.latest("a", 3) == [event("a", s) for s in (78, 79, 80)]
        assert store.after("a", 0, 2) == [event("a", 31), event("a", 32)]
        assert store.after("a", 77, 100) == [event("a", s) for s in (78, 79, 80)]
        assert store.before("a", 34, 100) == [event("a", s) for s in (31, 32, 33)]
        assert store.before("a", 1000, 2) == [event("a", 79), event("a", 80)]
        assert store.after("a", 80, 10) == [] and store.before("a", 31, 10) == []
        assert store.latest("nothing", 5) == [] and store.last_seq("nothing") == 0
        assert sorted(store.rooms()) == ["#b", "a"]
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_rooms_come_least_recently_written_first_and_forget_drops_a_room(kind, tmp_path):
    store = SqliteHistory(tmp_path / "h.db", 50) if kind == "sqlite" else MemoryHistory(50)
    try:
        for room in ("a", "b", "c"):
            fill(store, room, 1, 3)
        fill(store, "a", 4, 4)  # written again: now the most recent
        assert store.rooms() == ["b", "c", "a"] and store.room_count() == 3
        store.forget(["b", "c"])
        assert store.rooms() == ["a"] and store.room_count() == 1
        assert store.last_seq("b") == 0 and store.latest("b", 10) == []
        assert store.latest("a", 1) == [event("a", 4)]
    finally:
        store.close()


def test_reopened_rooms_keep_their_order_by_last_message_time(tmp_path):
    path = tmp_path / "h.db"
    first = SqliteHistory(path, 100)
    for ts, room in enumerate(("zeta", "alpha", "mid")):
        first.append_batch([(room, 1, b'{"op":"msg","room":"%s","seq":1,"ts":%d}' % (room.encode(), ts))])
    first.forget(["alpha"])
    first.close()
    second = SqliteHistory(path, 100)
    try:
        assert second.rooms() == ["zeta", "mid"]  # alpha's messages are gone for good
    finally:
        second.close()


def test_history_and_seq_survive_reopening(tmp_path):
    path = tmp_path / "h.db"
    first = SqliteHistory(path, 100)
    fill(first, "lobby", 1, 12)
    first.close()
    second = SqliteHistory(path, 100)
    try:
        assert second.rooms() == ["lobby"]
        assert (second.first_seq("lobby"), second.last_seq("lobby")) == (1, 12)
        assert second.latest("lobby", 2) == [event("lobby", 11), event("lobby", 12)]
    finally:
        second.close()


def test_a_smaller_history_max_prunes_on_open_but_keeps_the_seq(tmp_path):
    path = tmp_path / "h.db"
    first = SqliteHistory(path, 100)
    fill(first, "r", 1, 40)
    first.close()
    second = SqliteHistory(path, 10)
    try:
        assert (second.first_seq("r"), second.last_seq("r")) == (31, 40)
        assert second.after("r", 0, 100) == [event("r", s) for s in range(31, 41)]
    finally:
        second.close()


def test_a_failed_batch_stores_nothing(store):
    fill(store, "r", 1, 3)
    with pytest.raises(StoreError):  # NOT NULL refuses the second: the first goes too
        store.append_batch([("r", 4, event("r", 4)), ("r", 5, None)])
    assert store.last_seq("r") == 3
    assert store.after("r", 0, 10) == [event("r", s) for s in (1, 2, 3)]
    store.append_batch([("r", 4, event("r", 4))])
    assert store.last_seq("r") == 4


def test_a_seq_that_is_not_its_room_s_next_is_refused_and_nothing_is_stored(store, caplog):
    # The messages table has no unique (room, seq) of its own (see the schema's note).
    fill(store, "r", 1, 3)
    for batch in ([("s", 1, event("s", 1)), ("r", 3, event("r", 3))],  # again
                  [("r", 5, event("r", 5))],  # a gap
                  [("r", 4, event("r", 4)), ("r", 4, event("r", 4))]):  # twice in one batch
        with pytest.raises(StoreError, match="is not its next"):
            store.append_batch(batch)
    assert (store.last_seq("r"), store.last_seq("s")) == (3, 0)
    assert store.after("r", 0, 10) == [event("r", s) for s in (1, 2, 3)]
    store.append_batch([("r", 4, event("r", 4))])
    assert store.after("r", 2, 10) == [event("r", s) for s in (3, 4)]


def test_repeated_failed_batches_log_one_line_with_a_count(store, caplog):
    # Issue 12: a full disk failed every batch and logged 155 ERROR lines in 3 s.
    fill(store, "r", 1, 3)
    for _ in range(20):
        with pytest.raises(StoreError):
            store.append_batch([("r", 4, None)])  # a real SQLite failure, each time
    failures = [r for r in caplog.records if "cannot store" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    store.append_batch([("r", 4, event("r", 4))])  # the store itself is fine
    assert store.last_seq("r") == 4


@pytest.mark.parametrize("change", ["replace the database", "remove the lock"])
def test_a_file_replaced_under_the_store_fails_every_batch(change, store, tmp_path, caplog):
    fill(store, "r", 1, 2)
    path = tmp_path / "h.db"
    if change == "replace the database":
        path.rename(tmp_path / "aside.db")
        SqliteHistory(tmp_path / "other" / "h.db").close()
        (tmp_path / "other" / "h.db").rename(path)  # a gchat database, but another file
    else:  # the database stays; without its lock a second server could open it
        (tmp_path / "h.db.lock").unlink()
    for _ in range(3):
        with pytest.raises(StoreError, match=r"was removed or replaced.*restart the server"):
            store.append_batch([("r", 3, event("r", 3))])
    assert store.last_seq("r") == 2  # nothing stored, no seq used
    assert sum("was removed or replaced" in r.getMessage() for r in caplog.records) == 1


def test_reads_never_run_ahead_of_what_append_batch_returned(store, tmp_path):
    fill(store, "r", 1, 2)
    # Another connection commits seq 3 behind the store's back, as the writer thread
    # does before the server has delivered a batch: readers must not see it yet.
    other = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    other.execute("INSERT INTO messages (room, seq, event) VALUES ('r', 3, x'00')")
    other.close()
    assert store.latest("r", 10) == [event("r", 1), event("r", 2)]
    assert store.after("r", 0, 10) == [event("r", 1), event("r", 2)]


def test_a_second_server_on_the_same_file_is_refused(store, tmp_path):
    with pytest.raises(StoreError, match="in use by another gchat server"):
        SqliteHistory(tmp_path / "h.db")


def test_a_database_locked_by_another_program_is_a_clear_error(tmp_path):
    path = tmp_path / "h.db"
    SqliteHistory(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another program"):
            SqliteHistory(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def store_without_checkpoints(tmp_path, monkeypatch):
    """A store whose batches go to the writer thread only when they must wait for a lock
    (a checkpoint sends some there too)."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL", 3600.0)
    store = SqliteHistory(tmp_path / "h.db")
    fill(store, "b", 1, 2)  # the first batch after opening goes to the thread anyway
    assert not store._wal_may_restart
    yield store
    store.close()


@contextlib.contextmanager
def write_lock_held(path):
    """Another program (gchat-admin writing to a live file, say) holds the write lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("COMMIT")
        holder.close()


def append_leaving_the_loop_free(store, messages):
    """Start `store.append_batch(messages)` while the write lock is held elsewhere: the
    loop goes on at once (far below the 2 s the writer thread may wait for the lock),
    and the batch waits. Its greenlet."""
    started = time.monotonic()
    writer = gevent.spawn(store.append_batch, messages)
    other = gevent.spawn(time.monotonic)  # runs once the writer lets the loop go
    assert other.get(timeout=5) - started < 1, "the event loop waited"
    assert not writer.ready()
    return writer


def test_a_batch_waiting_for_another_programs_write_lock_does_not_block_the_loop(
        store_without_checkpoints, tmp_path):
    # NORMAL commits in the event loop, but never waits there for a lock: the batch
    # goes to the writer thread, which waits (its busy timeout) while the loop serves.
    # The second time too: once the thread is done, the loop's commits wait no more.
    store = store_without_checkpoints
    for seq in (1, 2):
        with write_lock_held(tmp_path / "h.db"):
            writer = append_leaving_the_loop_free(store, [("a", seq, event("a", seq))])
        writer.get(timeout=5)
    assert store.last_seq("a") == 2 and store.after("a", 0, 10) == [event("a", 1), event("a", 2)]


def test_a_greenlet_killed_while_the_thread_writes_keeps_the_loop_off_the_connection(
        store_without_checkpoints, tmp_path):
    # The writer thread goes on with the connection after the greenlet that handed it
    # the batch is killed: the next batch waits for the thread instead of using the
    # connection beside it (in the loop, waiting there for the thread's lock).
    store = store_without_checkpoints
    with write_lock_held(tmp_path / "h.db"):
        killed = gevent.spawn(store.append_batch, [("a", 1, event("a", 1))])
        gevent.sleep(0)  # it tried in the loop, got SQLITE_BUSY, and waits for the thread
        assert not killed.ready()
        killed.kill(block=False)
        writer = append_leaving_the_loop_free(store, [("c", 1, event("c", 1))])
    writer.get(timeout=5)
    killed.join(timeout=5)
    assert killed.dead and store.after("c", 0, 10) == [event("c", 1)]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"this is not a database, it is a text file\n" * 200)
    with pytest.raises(StoreError, match="not a usable gchat database"):
        SqliteHistory(path)
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


def test_someone_elses_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE accounts (id INTEGER)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="not gchat's"):
        SqliteHistory(path)
    with sqlite3.connect(path) as unchanged:  # refused before anything was changed
        assert unchanged.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_from_a_newer_gchat_is_refused(tmp_path):
    path = tmp_path / "h.db"
    SqliteHistory(path).close()
    newer = sqlite3.connect(path)
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(StoreError, match="newer gchat"):
        SqliteHistory(path)


def test_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        SqliteHistory(tmp_path)


def test_the_parent_directory_is_created(tmp_path):
    store = SqliteHistory(tmp_path / "var" / "deeper" / "h.db")
    store.close()
    assert (tmp_path / "var" / "deeper" / "h.db").is_file()


def test_close_is_idempotent_and_releases_the_file(tmp_path):
    store = SqliteHistory(tmp_path / "h.db")
    store.close()
    store.close()
    SqliteHistory(tmp_path / "h.db").close()  # the lock is free again


def test_a_version_1_database_gains_topics_and_keeps_its_messages(tmp_path):
    path = tmp_path / "v1.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                "event BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID")
    old.execute("INSERT INTO messages VALUES ('#a', 1, ?)", (b'{"op":"msg","seq":1}',))
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    store = SqliteHistory(path)
    assert store.last_seq("#a") == 1 and store.topic("#a") is None
    store.set_topic("#a", Topic("kept", "alice", 1))
    store.set_topic("#b", Topic("gone", "bob", 2))
    store.set_topic("#b", None)
    store.set_topic("#c", Topic("no history: gone at the next start", "carol", 3))
    store.close()
    store = SqliteHistory(path)
    try:
        assert store.latest("#a", 5) == [b'{"op":"msg","seq":1}']
        assert (store.topic("#a"), store.topic("#b"), store.topic("#c")) == (
            Topic("kept", "alice", 1), None, None)
        store.forget(["#a"])  # a room's history and its topic go together
        assert store.topic("#a") is None
    finally:
        store.close()
    with sqlite3.connect(path) as upgraded:
        assert upgraded.execute("SELECT COUNT(*) FROM topics").fetchone() == (0,)
        # Its messages now sit in arrival order (a rowid table), found by message_chunks.
        sql = upgraded.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'")
        assert "WITHOUT ROWID" not in sql.fetchone()[0].upper()
        assert upgraded.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                "AND tbl_name = 'messages'").fetchall() == []
        assert upgraded.execute("SELECT COALESCE(SUM(json_array_length(ids)), 0) "
                                "FROM message_chunks").fetchone() == upgraded.execute(
                                    "SELECT COUNT(*) FROM messages").fetchone()


def test_a_first_start_stopped_midway_through_the_schema_is_still_gchat_s(tmp_path):
    path = tmp_path / "h.db"
    half = sqlite3.connect(path)  # the tables made, the version not yet written
    half.execute("CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                 "event BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID")
    half.execute("CREATE TABLE topics (room TEXT NOT NULL PRIMARY KEY, text TEXT NOT NULL, "
                 "set_by TEXT NOT NULL, set_at INTEGER NOT NULL) WITHOUT ROWID")
    half.commit()
    half.close()
    SqliteHistory(path).close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_foreign_database_of_any_version_is_refused_unchanged(tmp_path, version):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE users (id INTEGER)")
        other.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(StoreError, match="not gchat's"):
        SqliteHistory(path)
    with sqlite3.connect(path) as unchanged:
        assert unchanged.execute("PRAGMA user_version").fetchone()[0] == version
        assert unchanged.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [row[0] for row in unchanged.execute("SELECT name FROM sqlite_master")] == ["users"]
