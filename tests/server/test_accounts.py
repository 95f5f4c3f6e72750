"""Accounts on the JSON door (docs/protocol.md, proto 2): a registered nick is only its
password's; passwords are stored as scrypt hashes and guessing them is slow."""

from __future__ import annotations

import glob
import sqlite3

import pytest

from gchat.errors import RequestError
from gchat.server.accounts import (
    Account,
    Accounts,
    LoginGuard,
    MemoryAccounts,
    hash_password,
    verify_password,
)
from tests.rawclient import Client

PASSWORD = "correct horse battery"


def code(reply):
    assert reply["op"] == "error", reply
    return reply["code"]


def registered(connect, nick, password=PASSWORD, target=None):
    """A session of `nick` that registered it; closed again."""
    client = connect(None, target)
    client.hello(nick, proto=2)
    assert client.request("register", password=password) == {
        "op": "ok", "id": "r2", "account": nick}
    client.request("quit")
    return client


def test_a_registered_nick_needs_its_password(connect):
    registered(connect, "alice")
    stranger = connect()
    assert code(stranger.request("hello", nick="ALICE")) == "account_required"
    assert code(stranger.request("hello", nick="alice", password="guess")) == "bad_password"
    assert code(stranger.request("hello", nick="mallory", password="x" * 8)) == "bad_password"
    reply = stranger.hello("alice", password=PASSWORD, proto=2)
    assert (reply["nick"], reply["account"], reply["proto"], reply["registration"]) == (
        "alice", "alice", 2, "open")


def test_a_version_1_client_sees_no_change(connect):
    reply = connect().hello("bob")
    assert reply["proto"] == 1 and "account" not in reply and "registration" not in reply
    assert connect().hello("carol", proto=1)["proto"] == 1


def test_a_guest_cannot_rename_to_a_registered_nick_but_the_owner_can(connect):
    registered(connect, "alice")
    guest = connect("guest")
    assert code(guest.request("nick", nick="Alice")) == "account_required"
    owner = connect()
    owner.hello("alice", password=PASSWORD)
    assert owner.request("nick", nick="away")["op"] == "ok"
    assert code(guest.request("nick", nick="alice")) == "account_required"
    assert owner.request("nick", nick="alice")["op"] == "ok"


def test_register_refuses_weak_passwords_taken_accounts_and_bad_args(connect):
    registered(connect, "alice")
    bob = connect()
    bob.hello("bob", proto=2)
    assert code(bob.request("register", password="short")) == "weak_password"
    assert code(bob.request("register", password=7)) == "bad_args"
    assert code(bob.request("register", password="x" * 1025)) == "bad_args"
    assert code(bob.request("register", password="nul\0inside")) == "bad_args"
    assert code(bob.request("register", password="a\0b")) == "bad_args"  # before weak_password
    assert code(bob.request("password", password="a", new_password="b" * 8)) == "not_logged_in"
    assert bob.request("register", password=PASSWORD)["account"] == "bob"
    assert code(bob.request("register", password=PASSWORD)) == "account_exists"


def test_a_password_change_needs_the_old_one(connect):
    registered(connect, "alice")
    alice = connect()
    alice.hello("alice", password=PASSWORD)
    assert code(alice.request("password", password="wrong", new_password="new secret")) \
        == "bad_password"
    assert code(alice.request("password", password=PASSWORD, new_password="tiny")) \
        == "weak_password"
    assert alice.request("password", password=PASSWORD, new_password="new secret")["op"] == "ok"
    alice.request("quit")
    assert code(connect().request("hello", nick="alice", password=PASSWORD)) == "bad_password"
    connect().hello("alice", password="new secret")


def test_a_dropped_account_frees_the_nick(connect):
    registered(connect, "alice")
    alice = connect()
    alice.hello("alice", password=PASSWORD)
    assert code(alice.request("drop", password="wrong")) == "bad_password"
    assert alice.request("drop", password=PASSWORD)["op"] == "ok"
    assert code(alice.request("drop", password=PASSWORD)) == "not_logged_in"
    alice.request("quit")
    connect("alice")  # a guest now


def test_guesses_are_limited_per_account(connect):
    registered(connect, "alice")
    guesser = connect()
    codes = [code(guesser.request("hello", nick="alice", password=f"guess{i}"))
             for i in range(6)]
    assert codes == ["bad_password"] * 5 + ["too_many_attempts"]
    # Even the right password waits now: the limit is per account.
    refused = guesser.request("hello", nick="alice", password=PASSWORD)
    assert code(refused) == "too_many_attempts" and "try again in" in refused["message"]


def test_the_guard_counts_failures_per_account_and_address_and_refills():
    guard = LoginGuard(account_burst=2, account_refill=10, address_burst=3, address_refill=1)
    assert guard.wait("alice", "10.0.0.1", 0) == 0
    guard.failed("alice", "10.0.0.1", 0)
    guard.failed("alice", "10.0.0.2", 0)
    assert guard.wait("alice", "10.0.0.3", 0) == pytest.approx(10)  # the account's bucket
    assert guard.wait("alice", "10.0.0.3", 5) == pytest.approx(5)
    assert guard.wait("alice", "10.0.0.3", 10) == 0
    for name in ("bob", "carol", "dave"):
        guard.failed(name, "10.0.0.9", 20)
    assert guard.wait("erin", "10.0.0.9", 20) == pytest.approx(1)  # the address's bucket
    assert guard.wait("erin", "10.0.0.8", 20) == 0


def test_registration_closed_and_off(make_server):
    closed = make_server(registration="closed")
    client = Client(closed.addresses[0])
    client.hello("bob", proto=2)
    assert code(client.request("register", password=PASSWORD)) == "registration_closed"
    off = make_server(registration="off", store="memory")
    client = Client(off.addresses[0])  # a password is ignored: a client keeps reconnecting
    reply = client.hello("bob", password=PASSWORD, proto=2)
    assert (reply["account"], reply["registration"]) == (None, "off")
    assert code(client.request("register", password=PASSWORD)) == "registration_closed"


def test_passwords_are_stored_as_salted_scrypt_hashes(server, connect):
    registered(connect, "alice")
    registered(connect, "bob")  # the same password
    path = server.settings.store_path
    rows = dict(sqlite3.connect(path).execute("SELECT key, hash FROM accounts"))
    assert rows.keys() == {"alice", "bob"}
    assert rows["alice"] != rows["bob"]  # salted
    assert all(value.startswith("scrypt$16384$8$1$") for value in rows.values())
    for name in glob.glob(path + "*"):  # the database, its WAL, its lock
        with open(name, "rb") as stored:
            assert PASSWORD.encode() not in stored.read()


def test_accounts_survive_a_restart(make_server, tmp_path):
    store = f"sqlite:{tmp_path / 'accounts.db'}"
    first = make_server(store=store)
    client = Client(first.addresses[0])
    client.hello("alice")
    assert client.request("register", password=PASSWORD)["op"] == "ok"
    first.shutdown()
    second = make_server(store=store)
    assert code(Client(second.addresses[0]).request("hello", nick="alice")) == "account_required"
    Client(second.addresses[0]).hello("alice", password=PASSWORD)


def test_hashes_verify_only_their_password():
    stored = hash_password("sesame")
    assert verify_password("sesame", stored)
    assert not verify_password("Sesame", stored)
    assert hash_password("sesame") != stored  # a fresh salt each time
    for broken in ("", "scrypt$1$2", "md5$x$y$z$a$b", "scrypt$16384$8$1$!!$??"):
        assert not verify_password("sesame", broken)


def test_the_service_is_the_same_for_operators():
    accounts = Accounts(MemoryAccounts(), registration="closed", min_password=8)
    with pytest.raises(RequestError, match="registration_closed"):
        accounts.register("bob", PASSWORD, "10.0.0.1")  # a user may not
    account = accounts.register("bob", "pw")  # an operator (no address) may, any length
    assert isinstance(account, Account) and accounts.registered("BOB") == account
    assert accounts.login("bob", "pw", "127.0.0.1") == account
    accounts.change_password("bob", "other")
    with pytest.raises(RequestError, match="bad_password"):
        accounts.login("bob", "pw", "127.0.0.1")
    assert accounts.drop("bob").id == account.id
    with pytest.raises(RequestError, match="no_such_account"):
        accounts.drop("bob")
    accounts.close()


def test_concurrent_guesses_count_as_much_as_guesses_in_a_row(connect):
    """Each try takes its token before its hash: 30 at once are 5 tries, then refusals."""
    registered(connect, "alice")
    guessers = [connect() for _ in range(30)]
    for index, guesser in enumerate(guessers):
        guesser.send({"op": "hello", "nick": "alice", "password": f"guess{index}", "id": 1})
    codes = [code(guesser.reply_to(1)) for guesser in guessers]
    assert set(codes) <= {"bad_password", "too_many_attempts"}
    assert 1 <= codes.count("bad_password") <= 5
    later = connect()
    codes += [code(later.request("hello", nick="alice", password=f"again{i}")) for i in range(6)]
    assert codes.count("bad_password") == 5  # at once or in a row: five tries in all


def test_one_address_cannot_keep_the_hash_pool_to_itself(connect):
    registered(connect, "alice")
    flood = [connect() for _ in range(4)]
    for client in flood:  # right passwords, all at once, from one address
        client.send({"op": "hello", "nick": "alice", "password": PASSWORD, "id": 1})
    replies = [client.reply_to(1) for client in flood]
    codes = [reply.get("code") for reply in replies]
    assert codes.count("too_many_attempts") == 2  # at most two hashes in flight per address
    assert [reply["op"] for reply in replies].count("ok") == 1  # the other: nick_taken


def test_a_dropped_nick_registered_again_is_another_account(connect):
    registered(connect, "alice")
    first = connect()
    first.hello("alice", password=PASSWORD)
    elsewhere = connect()  # the same account, logged in from a second session
    elsewhere.hello("zed", proto=2)
    assert elsewhere.request("register", password="x" * 8)["op"] == "ok"  # zed's own
    assert first.request("drop", password=PASSWORD)["op"] == "ok"
    first.request("quit")
    newcomer = connect()
    newcomer.hello("alice", proto=2)
    assert newcomer.request("register", password="another one")["op"] == "ok"
    newcomer.request("quit")
    assert code(connect().request("hello", nick="alice", password=PASSWORD)) == "bad_password"


def test_a_hello_refused_for_its_nick_leaves_no_login_behind(connect):
    registered(connect, "alice")
    connect().hello("alice", password=PASSWORD)  # alice is here
    second = connect()
    assert code(second.request("hello", nick="alice", password=PASSWORD)) == "nick_taken"
    assert second.hello("bob", proto=2)["account"] is None
