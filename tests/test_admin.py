"""`gchat-admin` as operators run it (a subprocess) against a stopped server's SQLite
file, a running server's, and a cluster's Redis: accounts it creates, resets and
deletes are what the server's doors see at the next login; passwords it is given show
in neither `ps` nor the server's log; every failure is one clear line and status 1."""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import sys

import pexpect
import pytest
from gevent import subprocess

from tests.server.process import ROOT, ServerProcess

PASSWORD = "admin pass 1"
ADMIN = [sys.executable, "-m", "gchat.admin"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the suite's GCHAT_ settings, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GCHAT_")}
    return {**env, **extra}


def admin(*args: str, password: str | None = None, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess:
    """Run gchat-admin; `password` is its standard input (with --password-stdin)."""
    stdin = f"{password}\n".encode() if password is not None else b""
    return subprocess.run([*ADMIN, *args], cwd=ROOT, input=stdin, capture_output=True, timeout=30,
                          env=env or clean_env())


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr in (b"", b"no accounts\n"), result.stderr
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess) -> str:
    """The one line of a failure (exit 1, no traceback)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    err = result.stderr.decode()
    assert err.startswith("gchat-admin: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("gchat-admin: ").strip()


def hello(server: ServerProcess, nick: str, password: str | None = None) -> dict:
    """The reply to a hello (proto 2) as `nick`, with `password` if given; the client quits."""
    client = server.client()
    fields = {"password": password} if password is not None else {}
    reply = client.request("hello", nick=nick, proto=2, **fields)
    client.close()
    return reply


def code(reply: dict) -> str:
    assert reply["op"] == "error", reply
    return reply["code"]


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:{tmp_path / 'var' / 'gchat.db'}"


@pytest.fixture
def servers():
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(*args, env=clean_env())
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def test_a_stopped_servers_file(store, servers, tmp_path):
    assert failed(admin("list", "--store", store)).startswith("there is no history database ")
    # create makes the file, with the server's whole schema.
    assert ok(admin("create", "alice", "--password-stdin", "--store", store, password=PASSWORD)) == \
        "created account alice\n"
    assert ok(admin("create", "Bob", "--password-stdin", "--store", store, password="b")) == \
        "created account Bob\n"  # an operator is held to no minimum length
    listed = ok(admin("list", "--store", store, env=clean_env(GCHAT_STORE=store))).splitlines()
    assert [line.split()[0] for line in listed] == ["alice", "Bob"]
    assert all(len(line.split()) == 3 for line in listed)  # name, date, time: never a hash
    assert "scrypt" not in "".join(listed)

    server = servers("--store", store)
    assert code(hello(server, "alice")) == "account_required"
    assert hello(server, "ALICE", PASSWORD)["account"] == "alice"
    assert hello(server, "bob", "b")["account"] == "Bob"
    server.proc.terminate()
    assert server.finish() == 0

    # With the server stopped: a new password for alice, no more bob.
    assert ok(admin("reset", "Alice", "--password-stdin", "--store", store, password="new one 2")) == \
        "reset the password of alice\n"
    assert ok(admin("delete", "bob", "--yes", "--store", store)) == "deleted account Bob\n"
    server = servers("--store", store)
    assert code(hello(server, "alice", PASSWORD)) == "bad_password"
    assert hello(server, "alice", "new one 2")["account"] == "alice"
    assert hello(server, "bob")["account"] is None  # anyone's nick again
    assert PASSWORD.encode() not in server.log


def test_a_running_servers_file(store, servers):
    server = servers("--store", store)
    # The password goes in on stdin: `ps` shows the command line, which never holds it.
    process = subprocess.Popen([*ADMIN, "create", "carol", "--password-stdin", "--store", store],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=clean_env())
    with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
        shown = cmdline.read()
    assert b"carol" in shown and PASSWORD.encode() not in shown
    out, err = process.communicate(f"{PASSWORD}\n".encode(), timeout=30)
    assert (process.returncode, out, err) == (0, b"created account carol\n", b"")
    # The running server sees it at the next login.
    assert code(hello(server, "carol")) == "account_required"
    assert hello(server, "carol", PASSWORD)["account"] == "carol"

    ok(admin("reset", "carol", "--password-stdin", "--store", store, password="second 22"))
    assert code(hello(server, "carol", PASSWORD)) == "bad_password"
    assert hello(server, "carol", "second 22")["account"] == "carol"

    # An account registered through the door is the admin's to list and delete.
    client = server.client()
    client.hello("dave", proto=2)
    assert client.request("register", password="dave's pass")["op"] == "ok"
    assert [line.split()[0] for line in ok(admin("list", "--store", store)).splitlines()] == \
        ["carol", "dave"]
    ok(admin("delete", "dave", "--yes", "--store", store))
    assert code(hello(server, "dave", "dave's pass")) == "bad_password"
    client.request("quit")
    assert hello(server, "dave")["nick"] == "dave"  # a guest may take it
    ok(admin("delete", "carol", "--yes", "--store", store))
    assert "no accounts" in admin("list", "--store", store).stderr.decode()

    # The server went on storing history meanwhile.
    talker = server.client("erin")
    talker.join("lobby")
    assert talker.request("say", room="lobby", text="still here")["op"] == "ok"
    for secret in (PASSWORD, "second 22", "dave's pass"):
        assert secret.encode() not in server.log


def test_failures_are_one_clear_line(store, tmp_path):
    ok(admin("create", "alice", "--password-stdin", "--store", store, password=PASSWORD))
    assert failed(admin("create", "ALICE", "--password-stdin", "--store", store, password="x")) == \
        "ALICE is registered already"
    assert failed(admin("reset", "nobody", "--password-stdin", "--store", store, password="x")) == \
        "there is no account nobody"
    assert failed(admin("delete", "nobody", "--yes", "--store", store)) == "there is no account nobody"
    assert failed(admin("delete", "alice", "--store", store)) == \
        "not deleting alice without asking: add --yes"  # no terminal to ask on
    assert failed(admin("create", "bob", "--store", store)) == \
        "no terminal to ask for the password on: give it with --password-stdin"
    assert failed(admin("create", "bob", "--password-stdin", "--store", store, password="")) == \
        "--password-stdin read no password (an empty line or no input)"
    assert "is not a nick" in failed(admin("create", "9lives", "--store", store))
    assert failed(admin("list", "--store", "memory")).startswith("--store memory keeps accounts")
    assert failed(admin("list", "--store", "nowhere")) == \
        "--store must be memory or sqlite:PATH, not 'nowhere'"

    text = tmp_path / "notes.txt"
    text.write_text("not a database, but precious\n" * 100)
    assert failed(admin("list", "--store", f"sqlite:{text}")) == f"{text} is not a SQLite database"
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    assert failed(admin("create", "bob", "--password-stdin", "--store", f"sqlite:{foreign}",
                        password=PASSWORD)) == f"{foreign} is a SQLite database, but not gchat's"
    with sqlite3.connect(foreign) as conn:  # untouched: not even made WAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert text.read_text() == "not a database, but precious\n" * 100


def test_a_file_to_upgrade_that_a_server_holds_is_refused(tmp_path):
    # A file from before accounts (schema 2) gains its accounts table when a server, or
    # gchat-admin, opens it with the lock; held by a running server, it is refused.
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                     "event BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "is in use by another gchat server" in failed(admin("list", "--store", f"sqlite:{path}"))
    finally:
        os.close(lock)
    assert "no accounts" in admin("list", "--store", f"sqlite:{path}").stderr.decode()  # upgraded


def test_the_password_prompt_is_hidden_and_asks_twice(store):
    child = pexpect.spawn(sys.executable, ["-m", "gchat.admin", "create", "frank", "--store", store],
                          cwd=str(ROOT), env=clean_env(), timeout=15)
    try:
        child.expect("Password: ")
        child.sendline(PASSWORD)
        child.expect("Repeat for confirmation: ")
        child.sendline("a typo")
        child.expect("do not match")
        child.expect("Password: ")
        child.sendline(PASSWORD)
        child.expect("Repeat for confirmation: ")
        child.sendline(PASSWORD)
        child.expect("created account frank")
        child.expect(pexpect.EOF)
        shown = child.before
    finally:
        child.close()
    assert child.exitstatus == 0
    assert PASSWORD.encode() not in shown and b"a typo" not in shown  # the terminal echoed neither


def test_a_clusters_redis(tmp_path):
    from tests.cluster.conftest import RedisServer, free_port

    assert "is unavailable" in failed(admin("list", "--backplane", f"redis://127.0.0.1:{free_port()}/0"))
    env = clean_env(GCHAT_BACKPLANE=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in failed(admin("list", env=env))  # a Redis password is never shown
    redis = RedisServer(tmp_path)
    node: ServerProcess | None = None
    try:
        env = clean_env(GCHAT_BACKPLANE=redis.url)
        assert ok(admin("create", "gina", "--password-stdin", password=PASSWORD, env=env)) == \
            "created account gina\n"
        node = ServerProcess("--backplane", redis.url, env=env)
        assert code(hello(node, "gina")) == "account_required"
        assert hello(node, "gina", PASSWORD)["account"] == "gina"
        ok(admin("reset", "gina", "--password-stdin", password="other 333", env=env))
        assert code(hello(node, "gina", PASSWORD)) == "bad_password"
        assert [line.split()[0] for line in ok(admin("list", env=env)).splitlines()] == ["gina"]
        ok(admin("delete", "gina", "--yes", env=env))
        assert hello(node, "gina")["account"] is None
        assert PASSWORD.encode() not in node.log and b"other 333" not in node.log
    finally:
        if node is not None:
            node.kill()
        redis.kill()


def test_the_script_runs_in_the_checkout_and_takes_no_password_flag():
    result = subprocess.run([str(ROOT / "bin" / "gchat-admin"), "create", "--help"], capture_output=True,
                            timeout=30, env=clean_env(), cwd="/")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.decode().partition("Options:")[2]
    options = set(re.findall(r"^  (-[-\w]+)", listed, re.MULTILINE))
    assert options == {"--password-stdin", "--store", "--backplane", "-h"}


def test_delete_takes_the_private_logs_and_an_upgrade_keeps_all_history(store, tmp_path):
    path = store.removeprefix("sqlite:")
    ok(admin("create", "alice", "--password-stdin", "--store", store, password=PASSWORD))
    with sqlite3.connect(path) as db:  # what the server would have logged for alice
        created = db.execute("SELECT created FROM accounts WHERE key = 'alice'").fetchone()[0]
        owner = f"alice~{created}"
        db.execute("INSERT INTO logs VALUES (?, 1, 1, '~1', x'7b7d')", (f"dm:{owner}:bob",))
        db.execute("INSERT INTO peers VALUES (?, 'bob', 1)", (owner,))
        db.execute("ANALYZE")  # SQLite's own statistics table is no stranger
    ok(admin("delete", "alice", "--yes", "--store", store))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM logs").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM peers").fetchone()[0] == 0
    # An older file gains the accounts table without losing history past the default limit.
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, "
                   "event BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID")
        db.executemany("INSERT INTO messages VALUES ('r', ?, x'7b7d')",
                       [(seq,) for seq in range(1, 10_101)])
        db.execute("PRAGMA user_version = 1")
    ok(admin("create", "bob", "--password-stdin", "--store", f"sqlite:{old}", password=PASSWORD))
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 10_100
