"""Each op of PROTOCOL.md section 4: its success, and each error code it lists."""

from __future__ import annotations

import gevent
import pytest


def error_code(reply):
    assert reply["op"] == "error", reply
    assert isinstance(reply["message"], str) and reply["message"]
    return reply["code"]


# -- hello ---------------------------------------------------------------------------------

def test_hello_ok_carries_session_server_proto_and_limits(connect):
    reply = connect().request("hello", nick="alice", proto=1, id=1)
    assert reply["op"] == "ok" and reply["id"] == 1
    assert reply["nick"] == "alice" and reply["proto"] == 1
    assert reply["server"].startswith("gchat/")
    assert isinstance(reply["session"], int) and reply["session"] > 0
    assert reply["limits"] == {
        "max_frame": 65536, "max_text": 4096, "max_rooms": 64, "rate": 50, "burst": 100,
        "idle_timeout": 60, "history_on_join": 20, "max_recover": 500,
        "max_queue_bytes": 4194304, "max_queue_frames": 10000, "max_clients": 10000}


def test_sessions_are_unique_positive_integers(connect):
    ids = [connect().hello(f"user{i}")["session"] for i in range(5)]
    assert len(set(ids)) == 5 and min(ids) > 0


@pytest.mark.parametrize("fields", [
    {}, {"nick": 5}, {"nick": None}, {"nick": "bob", "proto": 3}, {"nick": "bob", "proto": "1"},
    {"nick": "bob", "proto": 1.0}, {"nick": "bob", "token": 7}, {"nick": "bob", "password": 7},
])
def test_hello_bad_args(connect, fields):
    assert error_code(connect().request("hello", **fields)) == "bad_args"


@pytest.mark.parametrize("nick", ["", "1abc", "a" * 33, "al ice", "alice\n", "ålice", "-x", "a.b"])
def test_hello_invalid_nick(connect, nick):
    assert error_code(connect().request("hello", nick=nick)) == "invalid_nick"


def test_hello_longest_valid_nick(connect):
    connect().hello("a" + "B9_-" * 7 + "xyz")


def test_hello_nick_taken_ignores_ascii_case(connect):
    connect("Alice")
    assert error_code(connect().request("hello", nick="aLICE")) == "nick_taken"


def test_second_hello_is_already_registered(connect):
    client = connect("alice")
    assert error_code(client.request("hello", nick="other")) == "already_registered"
    # precedence: already_registered before bad_args
    assert error_code(client.request("hello")) == "already_registered"


def test_server_full_keeps_the_connection_unregistered(make_server, connect):
    server = make_server(max_clients=1)
    connect("first", target=server)
    late = connect(target=server)
    assert error_code(late.request("hello", nick="second")) == "server_full"
    assert error_code(late.request("rooms")) == "not_registered"
    assert late.request("ping")["op"] == "ok"


def test_token_required(make_server, connect):
    server = make_server(token="s3cret")
    client = connect(target=server)
    assert error_code(client.request("hello", nick="bob")) == "unauthorized"
    assert error_code(client.request("hello", nick="bob", token="wrong")) == "unauthorized"
    # value errors in order: unauthorized before invalid_nick
    assert error_code(client.request("hello", nick="1bad", token="wrong")) == "unauthorized"
    assert error_code(client.request("hello", nick="1bad", token="s3cret")) == "invalid_nick"
    assert client.request("hello", nick="bob", token="s3cret")["op"] == "ok"


def test_token_sent_to_an_open_server_is_ignored(connect):
    assert connect().request("hello", nick="bob", token="anything")["op"] == "ok"


# -- join / leave ----------------------------------------------------------------------------

def test_join_ok_lists_sorted_members_and_history(connect):
    zed, amy = connect("zed"), connect("Amy")
    zed.join("lobby")
    zed.request("say", room="lobby", text="one")
    reply = amy.request("join", room="lobby")
    assert reply["room"] == "lobby" and reply["members"] == ["Amy", "zed"]
    assert [m["text"] for m in reply["history"]] == ["one"]
    assert "recovered" not in reply


@pytest.mark.parametrize("fields", [{}, {"room": 3}, {"room": "x", "after": -1},
                                    {"room": "x", "after": 1.5}, {"room": "x", "after": "1"},
                                    {"room": "x", "after": True}])
def test_join_bad_args(connect, fields):
    assert error_code(connect("bob").request("join", **fields)) == "bad_args"


@pytest.mark.parametrize("room", ["", "#", "##a", "a b", "-a", "a" * 65, "lobby\n", "lo/bby"])
def test_join_invalid_room(connect, room):
    assert error_code(connect("bob").request("join", room=room)) == "invalid_room"


def test_room_names_are_case_sensitive_and_keep_the_hash(connect):
    client = connect("bob")
    for room in ("lobby", "Lobby", "#lobby", "#" + "x" * 64):
        assert client.join(room)["room"] == room
    rooms = [r["room"] for r in client.request("rooms")["rooms"]]
    assert rooms == sorted(["lobby", "Lobby", "#lobby", "#" + "x" * 64])


def test_too_many_rooms_but_rejoin_is_ok(make_server, connect):
    server = make_server(max_rooms=2)
    client = connect("bob", target=server)
    client.join("a")
    client.join("b")
    assert error_code(client.request("join", room="c")) == "too_many_rooms"
    assert client.request("join", room="a")["op"] == "ok"


def test_rejoin_sends_no_presence(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    assert alice.recv()["event"] == "join"
    assert bob.join("lobby")["members"] == ["alice", "bob"]
    alice.expect_nothing()


def test_leave(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.recv()
    assert bob.request("leave", room="lobby") == {"op": "ok", "id": "r3", "room": "lobby"}
    assert alice.recv() == {"op": "presence", "room": "lobby", "nick": "bob", "event": "leave"}
    assert error_code(bob.request("leave", room="lobby")) == "not_in_room"


@pytest.mark.parametrize("room", ["nowhere", "not valid!", ""])
def test_leave_not_in_room_whatever_the_name(connect, room):
    assert error_code(connect("bob").request("leave", room=room)) == "not_in_room"


@pytest.mark.parametrize("fields", [{}, {"room": 1}, {"room": ["lobby"]}])
def test_leave_bad_args(connect, fields):
    assert error_code(connect("bob").request("leave", **fields)) == "bad_args"


# -- say -------------------------------------------------------------------------------------

def test_say_delivers_msg_to_every_member_sender_first_then_ok(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.recv()  # bob's join
    alice.send({"op": "say", "room": "lobby", "text": "hi bob\nbye", "id": 9})
    msg = alice.recv()
    assert msg["op"] == "msg" and msg["room"] == "lobby" and msg["from"] == "alice"
    assert msg["text"] == "hi bob\nbye" and msg["seq"] == 1 and isinstance(msg["ts"], int)
    assert alice.recv() == {"op": "ok", "id": 9, "room": "lobby", "seq": 1}
    assert bob.recv() == msg


def test_say_not_in_room(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    for room in ("lobby", "elsewhere", "bad name!"):
        assert error_code(bob.request("say", room=room, text="x")) == "not_in_room"


@pytest.mark.parametrize("fields", [{"room": "lobby"}, {"room": "lobby", "text": ""},
                                    {"room": "lobby", "text": 5}, {"text": "x"},
                                    {"room": 5, "text": "x"}, {"room": "nowhere", "text": ""}])
def test_say_bad_args(connect, fields):
    client = connect("bob")
    client.join("lobby")
    assert error_code(client.request("say", **fields)) == "bad_args"


def test_say_text_too_long_counts_code_points(make_server, connect):
    server = make_server(max_text=3)
    client = connect("bob", target=server)
    client.join("lobby")
    assert client.request("say", room="lobby", text="😀é\n")["op"] == "ok"
    assert error_code(client.request("say", room="lobby", text="abcd")) == "text_too_long"
    # value errors come before state errors
    assert error_code(client.request("say", room="nowhere", text="abcd")) == "text_too_long"


# -- whisper ---------------------------------------------------------------------------------

def test_whisper_reaches_only_the_target(connect):
    alice, bob = connect("alice"), connect("bob")
    assert alice.request("whisper", to="BOB", text="psst", id=4) == {"op": "ok", "id": 4}
    event = bob.recv()
    assert event["op"] == "whisper" and event["from"] == "alice" and event["text"] == "psst"
    assert isinstance(event["ts"], int)
    alice.expect_nothing()


def test_whisper_to_oneself_event_then_ok(connect):
    alice = connect("alice")
    alice.send({"op": "whisper", "to": "alice", "text": "note", "id": 1})
    assert alice.recv()["op"] == "whisper"
    assert alice.recv() == {"op": "ok", "id": 1}


@pytest.mark.parametrize("to", ["nobody", "\u212aelvin", "kelvin ", ""])
def test_whisper_no_such_nick(connect, to):
    connect("kelvin")  # "\u212a" (Kelvin sign) folds to "k" only outside ASCII folding
    assert error_code(connect("alice").request("whisper", to=to, text="x")) == "no_such_nick"


def test_whisper_target_matches_ascii_case_insensitively(connect):
    kelvin = connect("kelvin")
    assert connect("alice").request("whisper", to="KELVIN", text="x")["op"] == "ok"
    assert kelvin.recv()["op"] == "whisper"


@pytest.mark.parametrize("fields", [{"to": "bob"}, {"to": "bob", "text": ""}, {"text": "x"},
                                    {"to": 1, "text": "x"}])
def test_whisper_bad_args(connect, fields):
    connect("bob")
    assert error_code(connect("alice").request("whisper", **fields)) == "bad_args"


def test_whisper_text_too_long(make_server, connect):
    server = make_server(max_text=2)
    connect("bob", target=server)
    assert error_code(connect("alice", target=server).request(
        "whisper", to="nobody", text="abc")) == "text_too_long"


# -- nick ------------------------------------------------------------------------------------

def test_nick_renames_and_tells_each_room_once(connect):
    alice, bob = connect("alice"), connect("bob")
    for room in ("a", "b"):
        alice.join(room)
        bob.join(room)
    assert bob.request("nick", nick="Robert")["nick"] == "Robert"
    events = [alice.recv() for _ in range(4)]
    renames = [e for e in events if e.get("event") == "rename"]
    assert sorted(e["room"] for e in renames) == ["a", "b"]
    assert all(e["nick"] == "Robert" and e["old"] == "bob" for e in renames)
    bob.expect_nothing()
    assert alice.request("whisper", to="robert", text="hi")["op"] == "ok"
    assert connect().hello("bob")  # the old nick is free


def test_nick_case_variant_sends_rename_identical_does_not(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("r")
    bob.join("r")
    alice.recv()
    assert bob.request("nick", nick="bob")["op"] == "ok"
    alice.expect_nothing()
    assert bob.request("nick", nick="BOB")["op"] == "ok"
    assert alice.recv() == {"op": "presence", "room": "r", "nick": "BOB", "event": "rename", "old": "bob"}


def test_nick_errors(connect):
    connect("alice")
    bob = connect("bob")
    assert error_code(bob.request("nick", nick="ALICE")) == "nick_taken"
    assert error_code(bob.request("nick", nick="9lives")) == "invalid_nick"
    assert error_code(bob.request("nick")) == "bad_args"
    assert error_code(bob.request("nick", nick=None)) == "bad_args"


# -- rooms / who / history -----------------------------------------------------------------

def test_rooms_lists_every_room_sorted_with_member_counts(connect):
    alice = connect("alice")
    for room in ("b", "B", "#a"):
        alice.join(room)
    alice.request("say", room="b", text="kept")
    alice.request("leave", room="b")  # has history: still exists, 0 members
    alice.request("leave", room="B")  # no history: gone
    assert alice.request("rooms")["rooms"] == [{"room": "#a", "members": 1}, {"room": "b", "members": 0}]


def make_rooms(client, names, say: bool = True) -> None:
    """Create rooms `names` (with one message each if `say`) and leave them, pipelined."""
    frames = []
    for name in names:
        frames.append({"op": "join", "room": name})
        if say:
            frames.append({"op": "say", "room": name, "text": "kept"})
        frames.append({"op": "leave", "room": name})
    for start in range(0, len(frames), 300):
        client.send(*frames[start:start + 300])
        client.drain()


def test_rooms_comes_in_pages_that_list_every_room_once(make_server, connect):
    # Extension (docs/protocol.md): at most 1000 rooms a reply; `after` pages on.
    server = make_server(rate=100_000, burst=100_000)
    alice = connect("alice", server)
    names = [f"r{i:04d}" for i in range(2500)]
    make_rooms(alice, names)
    first = alice.request("rooms")
    assert len(first["rooms"]) == 1000 and first["more"] is True
    listed, after = [], None
    while True:
        page = alice.request("rooms", **({"after": after} if after else {}), limit=700)
        listed += [room["room"] for room in page["rooms"]]
        if not page["more"]:
            break
        after = page["rooms"][-1]["room"]
    assert listed == names
    assert alice.request("rooms", after="r2499")["rooms"] == []
    assert alice.request("rooms", after="r1", limit=1)["rooms"] == [{"room": "r1000", "members": 0}]
    for bad in (0, 1001, "10", 1.5):
        assert error_code(alice.request("rooms", limit=bad)) == "bad_args"
    assert error_code(alice.request("rooms", after=5)) == "bad_args"


def test_rooms_keep_history_up_to_a_bound_the_least_recently_written_go_first(make_server, connect):
    server = make_server(max_history_rooms=20, rate=100_000, burst=100_000)
    alice, bob = connect("alice", server), connect("bob", server)
    bob.join("old")  # the oldest room with history, but it has a member: it stays
    bob.request("say", room="old", text="first")
    make_rooms(alice, [f"r{i:02d}" for i in range(40)])

    def listed():
        return [room["room"] for room in alice.request("rooms")["rooms"]]

    with gevent.Timeout(10, AssertionError(f"rooms never trimmed: {listed()}")):
        while len(listed()) > 20:
            gevent.sleep(0.05)
    assert listed() == ["old"] + [f"r{i:02d}" for i in range(21, 40)]
    assert error_code(alice.request("who", room="r00")) == "no_such_room"
    assert error_code(alice.request("history", room="r20")) == "no_such_room"
    assert [m["text"] for m in bob.request("history", room="old")["messages"]] == ["first"]
    # A forgotten room created again starts over at seq 1 (PROTOCOL.md 4).
    alice.join("r00")
    assert alice.request("say", room="r00", text="again")["seq"] == 1


def test_who_for_any_registered_session(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    assert bob.request("who", room="lobby")["members"] == ["alice"]
    assert error_code(bob.request("who", room="nowhere")) == "no_such_room"
    assert error_code(bob.request("who", room="bad name")) == "invalid_room"
    assert error_code(bob.request("who")) == "bad_args"


def test_history_pages(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    for i in range(1, 8):
        alice.request("say", room="lobby", text=str(i))

    def seqs(**fields):
        reply = bob.request("history", room="lobby", **fields)
        assert reply["op"] == "ok" and reply["room"] == "lobby", reply
        return [m["seq"] for m in reply["messages"]]

    assert seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert seqs(limit=3) == [5, 6, 7]
    assert seqs(after=2, limit=3) == [3, 4, 5]
    assert seqs(after=7) == []
    assert seqs(after=0, limit=100) == [1, 2, 3, 4, 5, 6, 7]
    assert seqs(before=3) == [1, 2]
    assert seqs(before=7, limit=2) == [5, 6]
    assert seqs(before=100, limit=1) == [7]
    assert seqs(before=None, after=None) == [1, 2, 3, 4, 5, 6, 7]
    first = bob.request("history", room="lobby", limit=1, before=2)["messages"][0]
    assert first["op"] == "msg" and first["from"] == "alice" and first["text"] == "1"


@pytest.mark.parametrize("fields", [{"before": 1, "after": 1}, {"limit": 0}, {"limit": 101},
                                    {"limit": 5.0}, {"after": -1}, {"before": "2"}])
def test_history_bad_args(connect, fields):
    alice = connect("alice")
    alice.join("lobby")
    assert error_code(alice.request("history", room="lobby", **fields)) == "bad_args"


def test_history_room_errors(connect):
    alice = connect("alice")
    assert error_code(alice.request("history", room="nowhere")) == "no_such_room"
    assert error_code(alice.request("history", room="not ok")) == "invalid_room"
    assert error_code(alice.request("history", room=5)) == "bad_args"


# -- ping / pong / quit ---------------------------------------------------------------------

def test_ping_and_pong(connect):
    client = connect()
    assert client.request("ping", id=0) == {"op": "ok", "id": 0}
    client.send({"op": "pong", "id": 3}, {"op": "pong", "id": [1]}, {"op": "pong", "x": {}})
    client.expect_nothing()


def test_quit_before_hello(connect):
    client = connect()
    client.send({"op": "quit", "id": 1})
    assert client.read_until_closed() == [{"op": "ok", "id": 1}, {"op": "bye", "reason": "quit"}]


def test_quit_with_bad_reason_is_bad_args_and_stays(connect):
    client = connect("bob")
    assert error_code(client.request("quit", reason=3)) == "bad_args"
    assert client.request("ping")["op"] == "ok"


def test_quit_frees_nick_and_tells_rooms(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.recv()
    bob.send({"op": "quit", "reason": "bye all", "id": 2})
    assert bob.read_until_closed() == [{"op": "ok", "id": 2}, {"op": "bye", "reason": "quit"}]
    assert alice.recv() == {"op": "presence", "room": "lobby", "nick": "bob", "event": "quit"}
    connect("bob")


# -- registration, unknown ops, ids ------------------------------------------------------------

@pytest.mark.parametrize("op", ["join", "leave", "say", "whisper", "nick", "rooms", "who", "history"])
def test_ops_before_hello_are_not_registered(connect, op):
    assert error_code(connect().request(op, room="lobby")) == "not_registered"


def test_unknown_op(connect):
    client = connect()
    assert error_code(client.request("dance")) == "unknown_op"
    # unknown_op precedes not_registered and the id check; an invalid id is echoed as null
    client.send({"op": "dance", "id": 1.5})
    assert client.recv()["code"] == "unknown_op"


@pytest.mark.parametrize("bad_id", [1.5, 2**53, -(2**53), True, [1], {"a": 1}, "x" * 65])
def test_invalid_id_is_bad_args_with_null_id_and_not_carried_out(connect, bad_id):
    client = connect()
    client.send({"op": "hello", "nick": "bob", "id": bad_id})
    reply = client.recv()
    assert reply["id"] is None and error_code(reply) == "bad_args"
    assert error_code(client.request("rooms")) == "not_registered"


@pytest.mark.parametrize("good_id", [0, 2**53 - 1, -(2**53 - 1), "", "x" * 64, "é" * 64, None])
def test_valid_ids_are_echoed_with_type_and_value(connect, good_id):
    client = connect()
    client.send({"op": "ping", "id": good_id})
    reply = client.recv()
    assert reply == {"op": "ok", "id": good_id}


# -- precedence (PROTOCOL.md 2 and 7) ------------------------------------------------------------

def test_not_registered_precedes_bad_args(connect):
    client = connect()
    assert error_code(client.request("join")) == "not_registered"
    assert error_code(client.request("say", room=5)) == "not_registered"


def test_nick_taken_precedes_server_full(make_server, connect):
    server = make_server(max_clients=1)
    connect("first", target=server)
    assert error_code(connect(target=server).request("hello", nick="FIRST")) == "nick_taken"


def test_invalid_nick_precedes_nick_taken_and_bad_args_precedes_both(connect):
    connect("taken")
    client = connect()
    assert error_code(client.request("hello", nick="1taken")) == "invalid_nick"
    assert error_code(client.request("hello", nick="taken", proto=3)) == "bad_args"


def test_bad_frame_echoes_a_valid_id_when_only_op_is_wrong(connect):
    client = connect()
    client.send_raw(b'{"id":5}\n{"op":7,"id":"x"}\n{"op":null,"id":2.5}\n[{"op":"ping","id":1}]\n')
    replies = [client.recv() for _ in range(4)]
    assert [(r["code"], r["id"]) for r in replies] == [("bad_frame", 5), ("bad_frame", "x"),
                                                       ("bad_frame", None), ("bad_frame", None)]
