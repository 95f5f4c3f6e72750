"""SqliteHistory: the durable history store, one SQLite file in WAL mode.

Strategy: the event loop must never wait on the disk. Writes that may wait (for an
fsync, or for another program's lock) go to one dedicated native thread (a gevent
ThreadPool of size 1); the caller's greenlet waits for it, the hub does not. The
server hands whole batches to `append_batch` (group commit, see publish.py), so one
transaction and one fsync cover every say that arrived while the previous batch was
being written.

With NORMAL (the default, below) a batch's commit is a write to the WAL in the OS's
page cache, no fsync: it takes tens of microseconds, less than handing it to the
thread and back (which, on one core, costs a wake-up and two thread switches per
batch). So `append_batch` then commits in the event loop itself, without waiting for
any lock: if another program holds the database's write lock (`gchat-admin` on a live
file), the batch goes to the writer thread, which waits for it as before. There is one
fsync with NORMAL: the first commit after a checkpoint has copied the whole WAL
starts the WAL over and syncs its header. So while a checkpoint runs, and after one
that copied everything until the next commit, batches go to the thread too. FULL,
whose commit fsyncs, always uses the thread. One greenlet at a time uses the write
connection (`_writing`).

Messages are indexed a room at a time: the messages table has no index of its own,
and message_chunks, (room, first seq) -> the rowids of up to CHUNK consecutive seqs, is
written in the batches' transactions, but only for some rooms in each: a room's
unindexed messages are indexed with the batch that brings them to ROOM_BATCH, or with
one of the next batches once the oldest is INDEX_AGE old (at most AGED_PER_BATCH such
rooms a batch). An index written with every batch for every room it touched dirtied
one index page per room per commit (three quarters of the store's CPU per message with
a hundred busy rooms); one page now takes many messages, and no batch does much more
index work than another (one transaction indexing everything at once stalled the loop
for tens of milliseconds on a large file). A row per chunk, not per message: an index
row per message cost about as much CPU as the message's own row. Until indexed, a
room's newest messages are read from memory (`_tail`), and its pruning only moves its
first seq: the rows go, a whole chunk at a time, when it is indexed. message_indexed
holds a rowid at or below which every message is indexed: opening the file indexes
what a crash left above it.

Reads run in the hub on a second connection: WAL readers never wait for the writer,
and every read is an indexed range of at most a few hundred rows. Reads are bounded by
the seqs the server has published (kept in memory here), so a batch that the writer
thread has committed but the server has not yet broadcast is never seen early.

Durability (`synchronous`): with NORMAL, the default, a commit is written to the WAL
(the OS's page cache) before the `ok`, and the checkpoint thread fsyncs the WAL once a
second: an acknowledged message survives a crash of the process (kill -9), while a
crash of the OS or a power loss may lose the last second of them (never corrupting the
file). FULL fsyncs the WAL at every commit: nothing acknowledged is lost even on power
loss (if the disk honours fsync), at the price of an fsync per batch.

One server owns a file: an flock on `PATH.lock` refuses a second server on the same
database instead of letting two servers hand out the same seqs.

A file removed or replaced under a running server (`rm gchat.db*`) would otherwise go
unnoticed: SQLite keeps writing to the open, unlinked file, says keep getting `ok`, and
all of them vanish at the next restart. So before each batch the writer compares
the device and inode at `PATH` and `PATH.lock` with the files it opened (two stat calls
per batch, not per message); once they differ every batch fails with StoreError (the
sender gets `unavailable`) and the server says once, at ERROR, that it must be restarted.
Repeated failures (a full disk fails every batch) are logged through a LogThrottle.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from bisect import bisect_left
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar, cast

import gevent
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from ..errors import StoreError
from ..logthrottle import LogThrottle
from .accounts import Account
from .eventlog import LOG_MAX, MAX_PEERS, LogEntry, dm_key, room_key
from .events import Topic

__all__ = ["SCHEMA_VERSION", "SqliteHistory", "delete_account_rows", "refuse_foreign"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # 2: topics; 3: accounts, event logs, messages in arrival order;
# 4: an index a room at a time; 5: the index in chunks
# Messages in a rowid table, in the order they are written, with no index of their own: a
# commit then dirties only the table's last pages. Reads go through message_chunks: a
# room's seqs first..last (at most CHUNK of them) and their messages' rowids, a JSON
# array in seq order (a room's rowids grow with its seqs), which the store fills a room
# at a time (see the module docstring): filled per commit, as an SQL index is, it
# dirtied one index page per room the batch touched, three quarters of the store's CPU
# per message (docs/benchmarks.md). message_indexed holds a rowid at or below which
# every message is in message_chunks. The rowid is named (`id`, schema 5): VACUUM may
# renumber an unnamed one, and the chunks would then point at other messages.
_MESSAGES = """
CREATE TABLE IF NOT EXISTS messages (
    id    INTEGER PRIMARY KEY,
    room  TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    event BLOB    NOT NULL
)
"""
_SCHEMA = (_MESSAGES, """
CREATE TABLE IF NOT EXISTS message_chunks (
    room  TEXT    NOT NULL,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL,
    ids   TEXT    NOT NULL,
    PRIMARY KEY (room, first)
) WITHOUT ROWID
""", """
CREATE TABLE IF NOT EXISTS message_indexed (
    id INTEGER NOT NULL
)
""", """
CREATE TABLE IF NOT EXISTS topics (
    room   TEXT    NOT NULL PRIMARY KEY,
    text   TEXT    NOT NULL,
    set_by TEXT    NOT NULL,
    set_at INTEGER NOT NULL
) WITHOUT ROWID
""", """
CREATE TABLE IF NOT EXISTS accounts (
    key     TEXT    NOT NULL PRIMARY KEY,
    name    TEXT    NOT NULL,
    hash    TEXT    NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID
""", """
CREATE TABLE IF NOT EXISTS logs (
    key   TEXT    NOT NULL,
    pos   INTEGER NOT NULL,
    ts    INTEGER NOT NULL,
    msgid TEXT    NOT NULL,
    event BLOB    NOT NULL,
    PRIMARY KEY (key, pos)
) WITHOUT ROWID
""", """
CREATE TABLE IF NOT EXISTS peers (
    owner TEXT    NOT NULL,
    peer  TEXT    NOT NULL,
    ts    INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID
""")
_COLUMNS = {"messages": ["id", "room", "seq", "event"],
            "message_index": ["room", "seq", "id"],  # schema 4's
            "message_chunks": ["room", "first", "last", "ids"], "message_indexed": ["id"],
            "topics": ["room", "text", "set_by", "set_at"],
            "accounts": ["key", "name", "hash", "created"],
            "logs": ["key", "pos", "ts", "msgid", "event"], "peers": ["owner", "peer", "ts"]}
_OLD_COLUMNS = {"messages": ["room", "seq", "event"]}  # before schema 5: the rowid unnamed
_BUSY_TIMEOUT_MS = 2000
CHECKPOINT_INTERVAL = 1.0  # seconds
# A room's messages are indexed with the batch that brings its unindexed ones to
# ROOM_BATCH, or with one of the next batches once the oldest is INDEX_AGE old (at most
# AGED_PER_BATCH such rooms a batch): one index page written for many messages, and no
# batch doing much more index work than the others.
ROOM_BATCH = 64
INDEX_AGE = 1.0  # seconds
AGED_PER_BATCH = 8
MARK_STEP = 4096  # rowids: the stored mark may lag this far (see _store_mark)
TAIL_LIMIT = 20_000  # unindexed messages held in memory: past this, rooms go before INDEX_AGE
# Seqs in a row of message_chunks, at most (reads do not depend on it: a file written
# with another CHUNK reads the same): a row of about 200 bytes, within what a 1 KiB page
# holds of a row until rowids or room names grow long (then a row spills into an
# overflow page: slower, not wrong).
CHUNK = 16
PAGE_SIZE = 1024
T = TypeVar("T")
_NO_SEQ = 2**63  # above every seq
_SELECT_EVENTS = ("SELECT event FROM messages WHERE rowid IN (SELECT value FROM json_each(?)) "
                  "ORDER BY rowid")
# The rowids in a room's (?) chunks; conditions on the chunks may follow (AND ...).
_CHUNK_IDS = "SELECT value FROM message_chunks, json_each(message_chunks.ids) WHERE room = ?"


def _ts(event: bytes) -> int:
    """The `ts` of a stored msg event (0 if it has none)."""
    try:
        ts = json.loads(event).get("ts", 0)
    except (ValueError, AttributeError):
        return 0
    return ts if isinstance(ts, int) else 0


def refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreError unless the tables in `conn` are gchat's own, as gchat makes them
    (SQLite's own, like ANALYZE's sqlite_stat1, aside). A first start may have stopped
    midway, so fewer is fine. Checked before anything changes the file."""
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")]
    if any([row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))]
           not in (_COLUMNS.get(table), _OLD_COLUMNS.get(table)) for table in tables):
        raise StoreError(f"{path} is a SQLite database, but not gchat's")


def delete_account_rows(conn: sqlite3.Connection, key: str) -> bool:
    """Delete the account of nick key `key` and the private logs of every account that
    nick had (owners "KEY~CREATED": '~' is 0x7e); in the caller's transaction. Whether
    an account was there."""
    deleted = conn.execute("DELETE FROM accounts WHERE key = ?", (key,)).rowcount > 0
    conn.execute("DELETE FROM logs WHERE key > ? AND key < ?", (f"dm:{key}~", f"dm:{key}\x7f"))
    conn.execute("DELETE FROM peers WHERE owner > ? AND owner < ?", (f"{key}~", f"{key}\x7f"))
    return deleted


def _chunks(entries: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int, str]]:
    """The rows of message_chunks for `entries` (room, seq, rowid), each room's in seq
    order: (room, first, last, ids), at most CHUNK consecutive seqs a row."""
    runs: dict[str, list[list[tuple[int, int]]]] = {}
    for room, seq, rowid in entries:
        room_runs = runs.get(room)
        if room_runs is None:
            runs[room] = [[(seq, rowid)]]
            continue
        run = room_runs[-1]
        if len(run) < CHUNK and seq == run[-1][0] + 1:
            run.append((seq, rowid))
        else:  # full, or not the next seq (never, as the batches are checked)
            room_runs.append([(seq, rowid)])
    return [(room, run[0][0], run[-1][0], _json_ids([rowid for _, rowid in run]))
            for room, room_runs in runs.items() for run in room_runs]


def _json_ids(rowids: list[int]) -> str:
    return "[" + ",".join([str(rowid) for rowid in rowids]) + "]"


def _insert_chunks(conn: sqlite3.Connection, entries: Iterable[tuple[str, int, int]]) -> None:
    """In the caller's transaction: index `entries` (room, seq, rowid), each room's in
    seq order and following its last chunk."""
    conn.executemany("INSERT INTO message_chunks (room, first, last, ids) VALUES (?, ?, ?, ?)",
                     _chunks(entries))


def _index_and_prune(conn: sqlite3.Connection, entries: list[tuple[str, int, int]],
                     prune: dict[str, int]) -> None:
    """In the caller's transaction: index `entries` (room, seq, rowid), then delete the
    pruned messages through the index."""
    if entries:
        _insert_chunks(conn, entries)
    for room, keep_from in prune.items():
        _prune(conn, room, keep_from)


def _prune(conn: sqlite3.Connection, room: str, keep_from: int) -> None:
    """Delete the indexed messages of `room` before seq `keep_from`; in the caller's
    transaction. The chunks before it go whole; the one that holds it (if any) loses
    its front."""
    conn.execute(f"DELETE FROM messages WHERE rowid IN ({_CHUNK_IDS} AND first < ? AND last < ?)",
                 (room, keep_from, keep_from))
    conn.execute("DELETE FROM message_chunks WHERE room = ? AND first < ? AND last < ?",
                 (room, keep_from, keep_from))
    split = conn.execute("SELECT first, ids FROM message_chunks WHERE room = ? AND first < ?",
                         (room, keep_from)).fetchone()  # chunks never overlap: one at most
    if split is not None:
        first, ids = split
        rowids = json.loads(ids)
        cut = keep_from - first
        conn.execute("DELETE FROM messages WHERE rowid IN (SELECT value FROM json_each(?))",
                     (_json_ids(rowids[:cut]),))
        conn.execute("UPDATE message_chunks SET first = ?, ids = ? WHERE room = ? AND first = ?",
                     (keep_from, _json_ids(rowids[cut:]), room, first))


def _seq(item: tuple[int, bytes, int]) -> int:
    return item[0]


class _Unindexed:
    """A room's messages not yet in message_chunks: (seq, event, rowid), oldest first,
    and when the first of them was stored."""

    __slots__ = ("items", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.items: list[tuple[int, bytes, int]] = []


def _capture(func: Callable[..., T], args: tuple[Any, ...]) -> tuple[T | None, Exception | None]:
    try:
        return func(*args), None
    except Exception as exc:
        return None, exc


class SqliteHistory:
    """History in the SQLite file `path`, at most `history_max` messages per room.

    `synchronous` is "normal" (durable on a process crash) or "full" (durable on
    power loss too). Raises StoreError when the file cannot be opened, is not a gchat database,
    or is locked by another program.
    """

    def __init__(self, path: str | os.PathLike[str], history_max: int = 10_000,
                 synchronous: str = "normal") -> None:
        self.path = Path(path)
        self.history_max = history_max
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        # The messages not yet in message_chunks, by room, oldest room first. Reads take a
        # room's newest messages from here, the older ones through the index.
        self._tail: dict[str, _Unindexed] = {}
        self._tail_count = 0  # the messages in _tail
        self._mark = 0  # the mark stored in message_indexed
        self._prune: dict[str, int] = {}  # room -> keep_from: pruned in memory, not yet on disk
        self._forgetting: set[str] = set()  # rooms whose rows forget() is deleting
        self._topics: dict[str, Topic] = {}  # every stored topic (few: set by hand)
        self._log = LogThrottle(log)
        self._gone: str | None = None  # why every batch fails: the file was removed
        self._lock_file = self._lock()
        self._opened: list[tuple[Path, tuple[int, int]]] = []  # (path, (st_dev, st_ino))
        self._pool = ThreadPool(1)
        self._writing = Semaphore()  # the write connection: one greenlet at a time
        # The write connection's busy timeout: on in the writer thread, off in the loop.
        self._waits_for_lock = True  # as connected (set where it changes, under _writing)
        self._inline = synchronous.upper() == "NORMAL"  # commits in the event loop
        # True while a commit could start the WAL over (an fsync): see the docstring.
        self._wal_may_restart = True  # opening checkpoints the whole WAL
        self._checkpointing = False
        self._checkpoints = 0  # checkpoints completed
        self._checkpoint_pool = ThreadPool(1)
        self._checkpointer: gevent.Greenlet | None = None
        try:
            self._writer = self._in_writer(self._open_writer, synchronous.upper())
            self._reader = self._connect()
            self._reader.execute("PRAGMA query_only = ON")
            self._checkpoint_conn = self._connect()
            # Each connection opens the WAL on first use: do it now, so the server's open
            # files do not change under load (the reliability tests count them).
            self._reader.execute("SELECT 1 FROM messages LIMIT 1").fetchall()
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            lock_stat = os.fstat(self._lock_file)
            db_stat = self.path.stat()  # just opened: the file the connections hold
            self._opened = [(self.path, (db_stat.st_dev, db_stat.st_ino)),
                            (Path(f"{self.path}.lock"), (lock_stat.st_dev, lock_stat.st_ino))]
            self._checkpointer = gevent.spawn(self._checkpoint_loop)
        except sqlite3.Error as exc:
            self._abandon()
            raise StoreError(self._describe(exc)) from exc
        except BaseException:
            self._abandon()
            raise

    # -- opening -------------------------------------------------------------------------

    def _lock(self) -> int:
        if self.path.is_dir():
            raise StoreError(f"cannot open history database {self.path}: it is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open history database {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"history database {self.path} is in use by another gchat server "
                             f"(it holds {self.path}.lock)") from exc
        return fd

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=_BUSY_TIMEOUT_MS / 1000)

    def _open_writer(self, synchronous: str) -> sqlite3.Connection:
        """In the writer thread: schema, WAL, retention, and the bounds of every room."""
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(f"unknown synchronous level {synchronous!r}")
        conn = self._connect()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"history database {self.path} was written by a newer gchat "
                                 f"(schema {version}, this one reads {SCHEMA_VERSION})")
            refuse_foreign(conn, self.path)
            if version == 0:
                # Small pages: a commit writes each index page it touches to the WAL.
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only a new file takes it
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"history database {self.path} cannot use WAL (journal mode {mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            # Commits never checkpoint: the checkpoint thread does (see _checkpoint_loop).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("BEGIN IMMEDIATE")  # an older file gains what it lacks, at once
            self._convert_messages(conn)
            self._name_rowids(conn)
            for table in _SCHEMA:
                conn.execute(table)
            conn.execute("DROP INDEX IF EXISTS messages_room_seq")  # schema 3's: now message_chunks
            self._convert_index(conn)
            self._mark = self._index_after_mark(conn)  # a crash's unindexed rows, or an old file's
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            self._load_bounds(conn)
            # A room with no history did not outlive the server (a crash left its topic
            # or its logged events).
            conn.execute("DELETE FROM topics WHERE room NOT IN (SELECT room FROM message_chunks)")
            conn.execute("DELETE FROM logs WHERE key > 'room:' AND key < 'room;' AND NOT EXISTS "
                         "(SELECT 1 FROM message_chunks WHERE room = substr(logs.key, 6))")
            self._topics = {room: Topic(text, by, at) for room, text, by, at in conn.execute(
                "SELECT room, text, set_by, set_at FROM topics")}
        except BaseException:
            conn.close()
            raise
        return conn

    def _convert_messages(self, conn: sqlite3.Connection) -> None:
        """A file of schema 1 or 2 keeps its messages clustered by (room, seq) (WITHOUT
        ROWID): copy them into the arrival-ordered table, once, in the transaction of
        the upgrade (a minute or so per ten million messages)."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                           "AND name = 'messages'").fetchone()
        if row is None or "WITHOUT ROWID" not in row[0].upper():
            return
        count = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        log.info("history: %s: storing %d messages in arrival order (schema 3)", self.path, count)
        conn.execute("ALTER TABLE messages RENAME TO messages_by_room")
        conn.execute(_MESSAGES)
        conn.execute("INSERT INTO messages (room, seq, event) "
                     "SELECT room, seq, event FROM messages_by_room ORDER BY room, seq")
        conn.execute("DROP TABLE messages_by_room")

    def _name_rowids(self, conn: sqlite3.Connection) -> None:
        """A file of schema 3 or 4 leaves its messages' rowids unnamed, and VACUUM may
        renumber them: copy the table into one that names them (`id`), keeping every
        rowid, once, in the transaction of the upgrade."""
        columns = [row[0] for row in conn.execute("SELECT name FROM pragma_table_info('messages')")]
        if columns != _OLD_COLUMNS["messages"]:
            return  # a new file, or named already
        log.info("history: %s: naming the messages' rowids (schema 5)", self.path)
        conn.execute("ALTER TABLE messages RENAME TO messages_unnamed")
        conn.execute(_MESSAGES)
        conn.execute("INSERT INTO messages (id, room, seq, event) "
                     "SELECT rowid, room, seq, event FROM messages_unnamed ORDER BY rowid")
        conn.execute("DROP TABLE messages_unnamed")

    def _convert_index(self, conn: sqlite3.Connection) -> None:
        """A file of schema 4 indexes each message in a row of message_index: its rows
        go into chunks, once, in the transaction of the upgrade."""
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'message_index'").fetchone():
            return
        log.info("history: %s: indexing messages in chunks (schema 5)", self.path)
        entries = conn.execute("SELECT room, seq, id FROM message_index ORDER BY room, seq")
        while batch := entries.fetchmany(100 * CHUNK):
            _insert_chunks(conn, batch)
        conn.execute("DROP TABLE message_index")

    def _load_bounds(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT room, MIN(first), MAX(last) FROM message_chunks "
                            "GROUP BY room").fetchall()
        # Least recently written first (rooms() promises it): by the ts of each last message.
        last_ts = {room: _ts(event) for room, event in conn.execute(
            "SELECT c.room, m.event FROM message_chunks c JOIN messages m "
            "ON m.rowid = json_extract(c.ids, '$[#-1]') "
            "WHERE c.first = (SELECT MAX(first) FROM message_chunks WHERE room = c.room)")}
        rows.sort(key=lambda row: last_ts.get(row[0], 0))
        conn.execute("BEGIN IMMEDIATE")
        for room, first, last in rows:
            keep_from = last - self.history_max + 1  # --history-max may have shrunk
            if first < keep_from:
                _prune(conn, room, keep_from)
                first = keep_from
            self._first[room] = first
            self._last[room] = last
        conn.execute("COMMIT")
        log.info("history: %s, %d rooms", self.path, len(rows))

    def _in_writer(self, func: Callable[..., T], *args: Any) -> T:
        """Take `_writing`, then `_in_thread`."""
        with self._writing:
            return self._in_thread(func, *args)

    def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        """Run `func` in the writer thread, parking only this greenlet; its exception is
        raised here (left in the thread, gevent would print it as a crash). The caller
        holds `_writing`, and keeps it until the thread is done with the write connection,
        even if this greenlet is killed meanwhile: the loop must not use the connection
        while the thread does."""
        if not self._waits_for_lock:
            func, args = self._waiting_for_lock, (func, *args)
        task = self._pool.spawn(_capture, func, args)
        try:
            result, error = cast(tuple[Any, Exception | None], task.get())
        except BaseException:
            task.wait()  # killed (or timed out): the thread finishes first
            raise
        if error is not None:
            raise error
        return cast(T, result)

    def _waiting_for_lock(self, func: Callable[..., T], *args: Any) -> T:
        """In the writer thread: `func`, after giving the write connection back the busy
        timeout that the event loop's commits turn off (once, not per batch)."""
        self._writer.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._waits_for_lock = True
        return func(*args)

    def _describe(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return f"history database {self.path} is locked by another program"
        if "not a database" in text or "malformed" in text:
            return f"{self.path} is not a usable gchat database ({text}); move it aside to start afresh"
        return f"cannot use history database {self.path}: {text}"

    def _abandon(self) -> None:
        self._pool.kill()
        self._checkpoint_pool.kill()
        os.close(self._lock_file)

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database once a second, in a thread of its own, so
        a say's commit never waits for a checkpoint (a passive checkpoint runs beside
        the writer; once it has copied everything the writer starts the WAL over)."""
        while True:
            gevent.sleep(CHECKPOINT_INTERVAL)
            self._checkpointing = True
            try:
                copied_all, error = self._checkpoint_pool.apply(_capture, (self._checkpoint, ()))
            except Exception as exc:
                copied_all, error = True, exc  # it may have
            finally:
                self._checkpointing = False
                self._checkpoints += 1
            if copied_all or error is not None:
                self._wal_may_restart = True
            if error is not None:  # once a second while it lasts: throttled
                self._log.error("checkpoint", "history: checkpoint failed: %s", error)

    def _checkpoint(self) -> bool:
        """In the checkpoint thread: a passive checkpoint; True if it copied the whole
        WAL (the next commit then starts the WAL over, and syncs)."""
        busy, frames, copied = self._checkpoint_conn.execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return not busy and copied == frames

    # -- indexing ---------------------------------------------------------------------------

    def _choose_to_index(self, messages: Sequence[tuple[str, int, bytes]]) -> set[str]:
        """The rooms whose unindexed messages this batch indexes: those that reach
        ROOM_BATCH with it, and up to AGED_PER_BATCH rooms whose oldest unindexed message
        is INDEX_AGE old (oldest first), so that work is spread over the batches."""
        tails = self._tail
        counts: dict[str, int] = {}
        for room, _, _ in messages:
            counts[room] = counts.get(room, 0) + 1
        chosen = set()
        for room, count in counts.items():
            tail = tails.get(room)
            if count + (len(tail.items) if tail is not None else 0) >= ROOM_BATCH:
                chosen.add(room)
        aged = 0
        now = monotonic()
        crowded = self._tail_count > TAIL_LIMIT  # then the oldest go, however young
        for room, tail in tails.items():  # oldest first: a room enters when it first waits
            if aged == AGED_PER_BATCH or (now - tail.since < INDEX_AGE and not crowded):
                break
            if room not in chosen:
                chosen.add(room)
                aged += 1
        return chosen

    def _index_entries(self, rooms: Iterable[str]) -> list[tuple[str, int, int]]:
        """(room, seq, rowid) of the unindexed messages of `rooms`."""
        tails = self._tail
        return [(room, seq, rowid) for room in rooms if room in tails
                for seq, _, rowid in tails[room].items]

    def _oldest_unindexed(self, but: Container[str]) -> int | None:
        """The rowid of the oldest unindexed message outside the rooms `but`."""
        for room, tail in self._tail.items():
            if room not in but:
                return tail.items[0][2]
        return None

    def _take_prune(self, rooms: Iterable[str]) -> dict[str, int]:
        return {room: self._prune.pop(room) for room in rooms if room in self._prune}

    def _restore_prune(self, prune: dict[str, int]) -> None:
        for room, keep_from in prune.items():  # pruned the next time the room is indexed
            self._prune[room] = max(keep_from, self._prune.get(room, 0))

    def _index_everything(self) -> None:
        """With `_writing` held: index every message not indexed yet, in the writer
        thread (closing). From the file, not from `_tail`: a write killed while the
        thread ran it (the server stopping) may have left memory behind the file."""
        prune = self._take_prune(list(self._prune))
        try:
            self._mark = self._in_thread(self._in_transaction, self._index_file, prune)
        except BaseException:
            self._restore_prune(prune)
            raise
        self._tail = {}
        self._tail_count = 0

    def _index_file(self, conn: sqlite3.Connection, prune: dict[str, int]) -> int:
        mark = self._index_after_mark(conn)
        _index_and_prune(conn, [], prune)
        return mark

    def _store_mark(self, conn: sqlite3.Connection, mark: int) -> int:
        """In the caller's transaction: store the mark, at or below which every message
        is indexed; return the mark stored (`_mark` once committed). A mark below the
        truth only makes the next start look at more rows (it skips what is indexed), so it is
        written once it moved up by MARK_STEP, or if it went down."""
        if mark < self._mark or mark - self._mark >= MARK_STEP:
            conn.execute("UPDATE message_indexed SET id = ?", (mark,))
            return mark
        return self._mark

    def _in_transaction(self, func: Callable[..., T], *args: Any) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = func(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _index_after_mark(conn: sqlite3.Connection) -> int:
        """In the caller's transaction, at opening: index what a crash left unindexed
        (every message, for a file of an older schema); return the new mark."""
        conn.execute("INSERT INTO message_indexed (id) SELECT 0 WHERE NOT EXISTS "
                     "(SELECT 1 FROM message_indexed)")
        mark = conn.execute("SELECT id FROM message_indexed").fetchone()[0]
        # Above the mark, a room's messages may be indexed already (it was indexed in a
        # later batch than another room's oldest unindexed message): those are skipped.
        indexed = dict(conn.execute("SELECT room, MAX(last) FROM message_chunks GROUP BY room"))
        rows = conn.execute("SELECT room, seq, rowid FROM messages WHERE rowid > ? "
                            "ORDER BY room, seq", (mark,))
        while batch := rows.fetchmany(100 * CHUNK):
            fresh = []
            for room, seq, rowid in batch:
                if seq > indexed.get(room, 0):
                    fresh.append((room, seq, rowid))
                    indexed[room] = seq
            _insert_chunks(conn, fresh)
        newest = conn.execute("SELECT MAX(rowid) FROM messages").fetchone()[0] or 0
        conn.execute("UPDATE message_indexed SET id = ?", (newest,))
        return cast(int, newest)

    # -- writing --------------------------------------------------------------------------

    def append_batch(self, messages: Sequence[tuple[str, int, bytes]]) -> None:
        """Store `messages` (room, seq, event), durably, in one transaction. Blocks the
        calling greenlet until the commit, never the hub; raises StoreError."""
        if self._gone is not None:
            raise StoreError(self._gone)
        with self._writing:  # the checks hold until the commit: no forget comes between
            self._append_batch(messages)

    def _append_batch(self, messages: Sequence[tuple[str, int, bytes]]) -> None:
        next_seq: dict[str, int] = {}
        for room, seq, _ in messages:
            if room in self._forgetting:  # its old rows are not deleted yet: try again later
                raise StoreError(f"the history of {room} is being deleted; try again")
            # The table has no unique (room, seq) of its own: what it held, this checks.
            if seq != next_seq.get(room, self._last.get(room, 0) + 1):
                self._log.error("order", "history: refused a batch: %s seq %d is not next", room, seq)
                raise StoreError(f"message {seq} of {room} is not its next (the batch was not stored)")
            next_seq[room] = seq + 1
        chosen = self._choose_to_index(messages)
        pruning = self._take_prune(chosen)  # pruned in memory before this batch
        try:
            last_rowid = self._commit(self._write, messages, chosen, self._index_entries(chosen),
                                      pruning, self._oldest_unindexed(chosen))
        except BaseException as exc:
            self._restore_prune(pruning)
            if isinstance(exc, _FileGone):
                self._gone = str(exc)
                log.error("history: %s", exc)  # once: every later batch fails before the writer
                raise StoreError(self._gone) from None
            if isinstance(exc, sqlite3.Error):
                self._log.error("write", "history: cannot store %d messages: %s", len(messages), exc)
                raise StoreError(self._describe(exc)) from exc
            raise
        self._after_write(messages, next_seq, chosen, last_rowid)

    def _after_write(self, messages: Sequence[tuple[str, int, bytes]], next_seq: dict[str, int],
                     chosen: set[str], last_rowid: int) -> None:
        """The batch is stored: the rooms' bounds, their unindexed messages, and their
        pruning (reads stop at the first seq kept; the rows go when the room is indexed)."""
        tails = self._tail
        for room in chosen:
            self._forget_tail(room)
        now = monotonic()
        rowid = last_rowid - len(messages)
        for room, seq, event in messages:
            rowid += 1
            self._first.setdefault(room, seq)
            self._last.pop(room, None)  # to the end: the dict's order is the rooms' last writes
            self._last[room] = seq
            if room not in chosen:
                tail = tails.get(room)
                if tail is None:
                    tail = tails[room] = _Unindexed(now)
                tail.items.append((seq, event, rowid))
                self._tail_count += 1
        for room, following in next_seq.items():
            keep_from = following - self.history_max
            if keep_from > self._first[room]:
                # Reads stop here at once; the rows go when the room is next indexed (not
                # in this batch's transaction: a read during a commit in the writer
                # thread would have missed them before _first moved).
                self._first[room] = keep_from
                self._prune[room] = keep_from

    def _forget_tail(self, room: str) -> None:
        tail = self._tail.pop(room, None)
        if tail is not None:
            self._tail_count -= len(tail.items)

    def _commit(self, func: Callable[..., T], *args: Any) -> T:
        """With `_writing` held: run `func`, a short write transaction, in the event
        loop when its commit cannot wait for the disk, else in the writer thread (see
        the module docstring)."""
        if self._inline and not (self._wal_may_restart or self._checkpointing):
            return self._commit_now(func, *args)
        checkpoints = self._checkpoints
        result = self._in_thread(func, *args)
        if checkpoints == self._checkpoints and not self._checkpointing:
            self._wal_may_restart = False  # it started the WAL over if it had to
        return result

    def _commit_now(self, func: Callable[..., T], *args: Any) -> T:
        """`func` in the event loop, unless the write lock is taken: then in the
        writer thread, which waits for it (see the module docstring)."""
        if self._waits_for_lock:  # only after the thread used the connection
            self._writer.execute("PRAGMA busy_timeout = 0")  # never wait in the event loop
            self._waits_for_lock = False
        try:
            return func(*args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        return self._in_thread(func, *args)  # rolled back: nothing was written

    def _write(self, messages: Sequence[tuple[str, int, bytes]], chosen: set[str],
               entries: list[tuple[str, int, int]], prune: dict[str, int],
               oldest_unindexed: int | None) -> int:
        """One transaction: append `messages`, index the `chosen` rooms' messages (their
        earlier ones are `entries`), prune; return the last rowid. The rows of one
        statement get consecutive rowids: without AUTOINCREMENT a new row gets the
        largest rowid + 1, and nobody else writes meanwhile."""
        self._check_files()
        conn = self._writer
        entries = list(entries)  # this may run twice (BUSY in the loop, then the thread)
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.execute("SELECT MAX(rowid) FROM messages").fetchone()[0] or 0
            conn.executemany("INSERT INTO messages (room, seq, event) VALUES (?, ?, ?)", messages)
            last = cast(int, conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            if last != before + len(messages):  # the largest rowid is taken: SQLite picks at random
                raise StoreError(f"history database {self.path} has a message with the largest "
                                 "possible rowid (not gchat's doing): messages cannot be stored")
            rowid = last - len(messages)
            for room, seq, _ in messages:
                rowid += 1
                if room in chosen:
                    entries.append((room, seq, rowid))
                elif oldest_unindexed is None:
                    oldest_unindexed = rowid
            _index_and_prune(conn, entries, prune)
            mark = self._store_mark(conn, last if oldest_unindexed is None else oldest_unindexed - 1)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._mark = mark
        return last

    def _check_files(self) -> None:
        """Before a batch is written: raise _FileGone when the file at the database's or the
        lock's path is no longer the one opened. Writing on would store messages in an
        unlinked file, lost at the next restart; and with the lock gone a second server
        could open the same database and hand out the same seqs."""
        for path, opened in self._opened:
            try:
                now = os.stat(str(path))  # not Path.stat: twice per batch, it shows
            except FileNotFoundError:
                pass
            except OSError:
                continue  # cannot tell (a permission change, say): SQLite will say if it matters
            else:
                if (now.st_dev, now.st_ino) == opened:
                    continue
            raise _FileGone(f"{path} was removed or replaced while the server was running: "
                            f"no more messages can be stored; restart the server")

    # -- reading ----------------------------------------------------------------------------

    def last_seq(self, room: str) -> int:
        return self._last.get(room, 0)

    def first_seq(self, room: str) -> int:
        return self._first.get(room, 0)

    def latest(self, room: str, limit: int) -> list[bytes]:
        return self._range(room, 0, _NO_SEQ, limit, newest=True)

    def after(self, room: str, seq: int, limit: int) -> list[bytes]:
        return self._range(room, seq + 1, _NO_SEQ, limit, newest=False)

    def before(self, room: str, seq: int, limit: int) -> list[bytes]:
        return self._range(room, 0, seq, limit, newest=True)

    def _range(self, room: str, low: int, high: int, limit: int, *, newest: bool) -> list[bytes]:
        """The oldest (or newest) `limit` messages of `room` with low <= seq < high,
        oldest first: those not yet indexed from the tail, the others from the file.
        Only stored, unpruned seqs are read: [first_seq, last_seq]."""
        last = self._last.get(room)
        if last is None or limit <= 0:
            return []
        low, high = max(low, self._first[room]), min(high, last + 1)
        if low >= high:
            return []
        unindexed = self._tail.get(room)
        tail = unindexed.items if unindexed is not None else []
        indexed_below = tail[0][0] if tail else high  # the file's part: seq < indexed_below
        file_high = min(high, indexed_below)
        start, end = bisect_left(tail, low, key=_seq), bisect_left(tail, high, key=_seq)
        if newest:  # the newest from the tail, the rest from the file
            recent = [event for _, event, _ in tail[max(start, end - limit):end]]
            want = limit - len(recent)
            if want <= 0 or low >= file_high:
                return recent
            return self._from_file(room, low, file_high, want, newest=True) + recent
        older = self._from_file(room, low, file_high, limit, newest=False) if low < file_high else []
        return older + [event for _, event, _ in tail[start:min(end, start + limit - len(older))]]

    def _from_file(self, room: str, low: int, high: int, limit: int, *, newest: bool) -> list[bytes]:
        """The oldest (or newest) `limit` indexed messages of `room` with low <= seq <
        high, oldest first: the rowids from the chunks, then the messages by rowid (in
        rowid order, which is a room's seq order)."""
        runs: list[list[int]] = []  # rowids, in the order the chunks are read
        count = 0
        try:
            # From the chunk that holds `low` (found by the key, whatever CHUNK was when
            # the file was written), or the first after it.
            chunks = self._reader.execute(
                "SELECT first, ids FROM message_chunks WHERE room = ?1 AND first >= IFNULL("
                "(SELECT MAX(first) FROM message_chunks WHERE room = ?1 AND first <= ?2), ?2) "
                f"AND first < ?3 ORDER BY first{' DESC' if newest else ''}", (room, low, high))
            for first, ids in chunks:
                rowids = json.loads(ids)[max(low - first, 0):max(high - first, 0)]
                if not rowids:
                    continue
                wanted = limit - count
                runs.append(rowids[-wanted:] if newest else rowids[:wanted])
                count += len(runs[-1])
                if count >= limit:
                    break
            if newest:
                runs.reverse()
            every_id = _json_ids([rowid for run in runs for rowid in run])
            return [row[0] for row in self._reader.execute(_SELECT_EVENTS, (every_id,))]
        except sqlite3.Error as exc:
            self._log.error("read", "history: cannot read %s: %s", room, exc)
            raise StoreError(self._describe(exc)) from exc

    def rooms(self) -> list[str]:
        return list(self._last)

    def room_count(self) -> int:
        return len(self._last)

    def forget(self, rooms: Sequence[str]) -> None:
        """Delete every message of `rooms` in one transaction, which indexes the tail."""
        if self._gone is not None:
            raise StoreError(self._gone)
        # Forgotten before the writer runs: a room joined meanwhile starts afresh at seq
        # 1, and its messages are refused (the sender gets `unavailable`) until the old
        # rows are deleted (_forgetting).
        bounds = {room: (self._first.pop(room), self._last.pop(room))
                  for room in rooms if room in self._last}
        topics = {room: self._topics.pop(room) for room in rooms if room in self._topics}
        self._forgetting.update(rooms)
        try:
            with self._writing:  # in the thread: the rooms may hold many rows
                prune = self._take_prune(rooms)
                try:
                    self._mark = self._in_thread(
                        self._in_transaction, self._delete_rooms, self._index_entries(rooms),
                        prune, rooms, self._oldest_unindexed(rooms))
                except BaseException:
                    self._restore_prune(prune)
                    raise
                for room in rooms:
                    self._forget_tail(room)
        except sqlite3.Error as exc:
            for room, (first, last) in bounds.items():
                if room not in self._last:  # not written meanwhile (a batch already checked)
                    self._first[room], self._last[room] = first, last
            for room, topic in topics.items():
                self._topics.setdefault(room, topic)
            self._log.error("forget", "history: cannot forget %d rooms: %s", len(rooms), exc)
            raise StoreError(self._describe(exc)) from exc
        else:
            for room in rooms:  # a batch checked before they were forgotten is deleted too
                self._first.pop(room, None)
                self._last.pop(room, None)
        finally:
            self._forgetting.difference_update(rooms)

    def _delete_rooms(self, conn: sqlite3.Connection, entries: list[tuple[str, int, int]],
                      prune: dict[str, int], rooms: Sequence[str],
                      oldest_unindexed: int | None) -> int:
        """In the caller's transaction: delete `rooms` (their unindexed messages are
        `entries`, indexed first so the index finds them); return the mark."""
        _index_and_prune(conn, entries, prune)
        names = [(room,) for room in rooms]
        conn.executemany(f"DELETE FROM messages WHERE rowid IN ({_CHUNK_IDS})", names)
        conn.executemany("DELETE FROM message_chunks WHERE room = ?", names)
        conn.executemany("DELETE FROM topics WHERE room = ?", names)
        conn.executemany("DELETE FROM logs WHERE key = ?", [(room_key(room),) for room in rooms])
        # The next rowid follows the highest one left, which may now be below the mark:
        # the mark comes down below the oldest unindexed message of another room, or
        # to the highest rowid left.
        highest = conn.execute("SELECT MAX(rowid) FROM messages").fetchone()[0] or 0
        mark = highest if oldest_unindexed is None else min(highest, oldest_unindexed - 1)
        conn.execute("UPDATE message_indexed SET id = ?", (mark,))
        return cast(int, mark)

    def topic(self, room: str) -> Topic | None:
        return self._topics.get(room)

    def set_topic(self, room: str, topic: Topic | None) -> None:
        """Store (None: delete) the room's topic, in the writer thread."""
        self._write_one("a topic", self._write_topic, room, topic)
        if topic is None:
            self._topics.pop(room, None)
        else:
            self._topics[room] = topic

    def _write_topic(self, room: str, topic: Topic | None) -> None:
        self._check_files()
        if topic is None:
            self._writer.execute("DELETE FROM topics WHERE room = ?", (room,))
        else:
            self._writer.execute("INSERT OR REPLACE INTO topics (room, text, set_by, set_at) "
                                 "VALUES (?, ?, ?, ?)", (room, *topic))

    # -- accounts (an AccountStore: accounts.py) ------------------------------------------------

    def account(self, key: str) -> Account | None:
        try:
            row = self._reader.execute("SELECT name, hash, created FROM accounts WHERE key = ?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            self._log.error("read", "accounts: cannot read: %s", exc)
            raise StoreError(self._describe(exc)) from exc
        return Account(*row) if row is not None else None

    def create_account(self, account: Account) -> bool:
        return self._write_account(
            "INSERT OR IGNORE INTO accounts (key, name, hash, created) VALUES (?, ?, ?, ?)",
            (account.key, account.name, account.hash, account.created))

    def update_account(self, account: Account) -> bool:
        return self._write_account("UPDATE accounts SET hash = ? WHERE key = ?",
                                   (account.hash, account.key))

    def delete_account(self, key: str) -> bool:
        """Delete the account and, in the same transaction, its private logs."""
        return self._write_one("an account", self._delete_account, key)

    def _delete_account(self, key: str) -> bool:
        self._check_files()
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = delete_account_rows(conn, key)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return deleted

    def accounts(self) -> list[Account]:
        try:
            rows = self._reader.execute(
                "SELECT name, hash, created FROM accounts ORDER BY key").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc
        return [Account(*row) for row in rows]

    def _write_account(self, sql: str, args: tuple[object, ...]) -> bool:
        """One account statement in the writer thread: whether it changed a row."""
        return self._write_one("an account", self._execute_changing, sql, args)

    def _write_one(self, what: str, func: Callable[..., T], *args: Any) -> T:
        """A small write (`func` in the writer thread); StoreError if it fails."""
        if self._gone is not None:
            raise StoreError(self._gone)
        try:
            return self._in_writer(func, *args)
        except _FileGone as exc:
            self._gone = str(exc)
            log.error("history: %s", exc)
            raise StoreError(self._gone) from None
        except sqlite3.Error as exc:
            self._log.error(what, "history: cannot store %s: %s", what, exc)
            raise StoreError(self._describe(exc)) from exc

    def _execute_changing(self, sql: str, args: tuple[object, ...]) -> bool:
        self._check_files()
        return self._writer.execute(sql, args).rowcount > 0

    # -- event logs (an EventLog: eventlog.py) -----------------------------------------------

    def log_append(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        self._write_one("a logged event", self._append_logs, entries)

    def _append_logs(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        self._check_files()
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO logs (key, pos, ts, msgid, event) "
                             "VALUES (?, ?, ?, ?, ?)", [(key, *entry) for key, entry in entries])
            for key in {key for key, _ in entries}:
                conn.execute("DELETE FROM logs WHERE key = ? AND pos <= (SELECT pos FROM logs "
                             "WHERE key = ? ORDER BY pos DESC LIMIT 1 OFFSET ?)",
                             (key, key, LOG_MAX))
            for key, entry in entries:
                if key.startswith("dm:"):
                    self._note_peer(conn, key, entry.ts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def log_range(self, key: str, low: int | None, high: int | None, limit: int,
                  newest: bool) -> list[LogEntry]:
        low = -(2**62) if low is None else low
        high = 2**62 if high is None else high
        order = "DESC" if newest else ""
        rows = self._read(f"SELECT pos, ts, msgid, event FROM logs WHERE key = ? AND pos > ? "
                          f"AND pos < ? ORDER BY pos {order} LIMIT ?", (key, low, high, limit))
        entries = [LogEntry(*row) for row in rows]
        return entries[::-1] if newest else entries

    def log_seek(self, key: str, ts: int, strict: bool) -> int | None:
        rows = self._read(f"SELECT pos FROM logs WHERE key = ? AND ts {'>' if strict else '>='} ? "
                          "ORDER BY pos LIMIT 1", (key, ts))
        return rows[0][0] if rows else None

    def log_last(self, key: str) -> int | None:
        rows = self._read("SELECT MAX(pos) FROM logs WHERE key = ?", (key,))
        return rows[0][0]

    @staticmethod
    def _note_peer(conn: sqlite3.Connection, key: str, ts: int) -> None:
        """A private log grew: its peer's last time; past MAX_PEERS, the least recent
        conversation goes."""
        _, owner, peer = key.split(":", 2)
        conn.execute("INSERT INTO peers (owner, peer, ts) VALUES (?, ?, ?) ON CONFLICT "
                     "(owner, peer) DO UPDATE SET ts = excluded.ts", (owner, peer, ts))
        count = conn.execute("SELECT COUNT(*) FROM peers WHERE owner = ?", (owner,)).fetchone()[0]
        if count > MAX_PEERS:
            oldest = conn.execute("SELECT peer FROM peers WHERE owner = ? ORDER BY ts LIMIT 1",
                                  (owner,)).fetchone()[0]
            conn.execute("DELETE FROM peers WHERE owner = ? AND peer = ?", (owner, oldest))
            conn.execute("DELETE FROM logs WHERE key = ?", (dm_key(owner, oldest),))

    def log_peers(self, owner: str) -> list[tuple[str, int]]:
        return [tuple(row) for row in self._read("SELECT peer, ts FROM peers WHERE owner = ?",
                                                 (owner.lower(),))]

    def log_forget(self, key: str) -> None:
        self._write_one("a logged event", self._execute_changing,
                        "DELETE FROM logs WHERE key = ?", (key,))

    def _read(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._log.error("read", "history: cannot read: %s", exc)
            raise StoreError(self._describe(exc)) from exc

    def check(self) -> str | None:
        """Why the store cannot be used (its file was removed, a read fails), or None."""
        if self._gone is not None:
            return self._gone
        try:
            self._reader.execute("SELECT 1 FROM messages LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            return self._describe(exc)
        return None

    def close(self) -> None:
        """Finish the writer thread and close the database (idempotent)."""
        if self._lock_file < 0:
            return
        if self._checkpointer is not None:
            self._checkpointer.kill()
        if (self._tail or self._prune) and self._gone is None:
            try:  # a tidy file for other programs; the next start would do it anyway
                with self._writing:
                    self._index_everything()
            except sqlite3.Error as exc:
                log.warning("history: cannot index messages on closing: %s", exc)
        try:
            self._checkpoint_pool.apply(self._checkpoint_conn.close)
            self._in_writer(self._writer.close)  # the last connection checkpoints the WAL
        finally:
            self._pool.kill()
            self._checkpoint_pool.kill()
            self._reader.close()
            os.close(self._lock_file)
            self._lock_file = -1


class _FileGone(Exception):
    """The database or its lock is no longer the file at its path (see _check_files)."""
