"""Room topics and operators, an extension (docs/protocol.md): the member that creates a
room runs it, sets the topic while the room is +t, makes others operators and kicks."""

from __future__ import annotations

import signal
import time

import gevent

from gchat.server.sqlite_store import SqliteHistory


def op_of(client, room: str) -> list[str]:
    return client.request("who", room=room)["ops"]


def test_who_creates_a_room_is_its_operator_and_the_topic_is_locked(connect):
    alice, bob = connect("alice"), connect("bob")
    first = alice.join("#dev")
    assert first["ops"] == ["alice"] and first["topic_locked"] is True and "topic" not in first
    second = bob.join("#dev")
    assert second["ops"] == ["alice"] and second["members"] == ["alice", "bob"]
    assert op_of(bob, "#dev") == ["alice"]


def test_an_operator_sets_the_topic_every_member_is_told_before_the_ok(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#dev")
    bob.join("#dev")
    alice.drain()
    alice.send({"op": "topic", "room": "#dev", "text": "release on friday", "id": 1})
    told = alice.recv()
    assert {k: told[k] for k in ("op", "room", "topic", "from")} == {
        "op": "topic", "room": "#dev", "topic": "release on friday", "from": "alice"}
    ok = alice.recv()
    assert ok["op"] == "ok" and ok["id"] == 1
    assert ok["topic"] == {"text": "release on friday", "by": "alice", "ts": told["ts"]}
    assert bob.recv() == told
    assert bob.request("topic", room="#dev")["topic"]["text"] == "release on friday"
    carol = connect("carol")
    assert carol.join("#dev")["topic"] == ok["topic"]  # a joiner sees it in the join
    assert carol.request("topic", room="#dev", text="mine")["code"] == "not_operator"
    alice.drain()
    alice.send({"op": "topic", "room": "#dev", "text": "", "id": 2})  # "" clears it
    assert alice.recv()["topic"] == ""
    assert alice.recv() == {"op": "ok", "id": 2, "room": "#dev", "topic": None}
    assert "topic" not in carol.request("who", room="#dev")


def test_minus_t_lets_any_member_set_the_topic(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#dev")
    bob.join("#dev")
    assert bob.request("mode", room="#dev", change="-t")["code"] == "not_operator"
    reply = alice.request("mode", room="#dev", change="-t")
    assert reply == {"op": "ok", "id": reply["id"], "room": "#dev"}
    changed = bob.recv()
    assert {k: changed[k] for k in ("op", "room", "change", "from")} == {
        "op": "mode", "room": "#dev", "change": "-t", "from": "alice"}
    assert bob.request("topic", room="#dev", text="anyone may")["topic"]["by"] == "bob"
    assert bob.request("who", room="#dev")["topic_locked"] is False
    bob.drain()
    assert alice.request("mode", room="#dev", change="-t")["op"] == "ok"
    bob.expect_nothing()  # it was -t already: nobody is told again


def test_an_operator_makes_and_unmakes_operators(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for client in (alice, bob, carol):
        client.join("#dev")
    assert bob.request("mode", room="#dev", change="+o", nick="carol")["code"] == "not_operator"
    assert alice.request("mode", room="#dev", change="+o", nick="BOB")["op"] == "ok"
    told = carol.recv_until(lambda f: f["op"] == "mode")[-1]
    assert (told["change"], told["nick"], told["from"]) == ("+o", "bob", "alice")
    assert op_of(carol, "#dev") == ["alice", "bob"]
    assert bob.request("mode", room="#dev", change="-o", nick="alice")["op"] == "ok"
    assert op_of(carol, "#dev") == ["bob"]
    assert bob.request("mode", room="#dev", change="+o", nick="nobody")["code"] == "no_such_nick"
    dave = connect("dave")  # registered, but not in the room
    assert bob.request("mode", room="#dev", change="+o", nick="dave")["code"] == "no_such_nick"
    assert dave.request("mode", room="#dev", change="+t")["code"] == "not_in_room"


def test_an_operator_kicks_a_member_out(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for client in (alice, bob, carol):
        client.join("#dev")
    alice.drain()
    carol.drain()
    assert bob.request("kick", room="#dev", nick="carol")["code"] == "not_operator"
    reply = alice.request("kick", room="#dev", nick="Bob", reason="spam")
    assert reply["op"] == "ok" and reply["nick"] == "bob"
    assert bob.recv_until(lambda f: f["op"] == "kicked")[-1] == {
        "op": "kicked", "room": "#dev", "by": "alice", "reason": "spam"}
    for other in (alice, carol):
        gone = other.recv_until(lambda f: f["op"] == "presence")[-1]
        assert gone == {"op": "presence", "room": "#dev", "nick": "bob", "event": "leave",
                        "by": "alice", "reason": "spam"}
    assert bob.request("say", room="#dev", text="still here?")["code"] == "not_in_room"
    assert carol.request("who", room="#dev")["members"] == ["alice", "carol"]
    assert bob.join("#dev")["ops"] == ["alice"]  # back in, as a plain member
    assert alice.request("kick", room="#dev", nick="nobody")["code"] == "no_such_nick"


def test_operators_go_with_their_members_and_a_new_room_has_a_new_creator(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.request("leave", room="lobby")
    assert op_of(bob, "lobby") == []  # nobody runs it now (as on IRC)
    bob.request("leave", room="lobby")
    assert alice.join("lobby")["ops"] == ["alice"]  # it was gone: made again


def test_bad_topic_kick_and_mode_requests_get_clear_errors(connect):
    alice = connect("alice")
    alice.join("#dev")
    cases = [
        ({"op": "topic", "room": "#dev", "text": "two\nlines"}, "bad_args"),
        ({"op": "topic", "room": "#dev", "text": "é" * 196}, "text_too_long"),  # 392 bytes
        ({"op": "topic", "room": "#dev", "text": 5}, "bad_args"),
        ({"op": "topic", "room": "#elsewhere", "text": "x"}, "not_in_room"),
        ({"op": "topic", "room": "#nowhere"}, "no_such_room"),
        ({"op": "kick", "room": "#dev"}, "bad_args"),
        ({"op": "kick", "room": "#dev", "nick": "x", "reason": "r" * 391}, "text_too_long"),
        ({"op": "mode", "room": "#dev", "change": "+s"}, "bad_args"),
        ({"op": "mode", "room": "#dev", "change": "+o"}, "bad_args"),
        ({"op": "mode", "room": "#elsewhere", "change": "+t"}, "not_in_room"),
    ]
    for request, code in cases:
        assert alice.request(request.pop("op"), **request)["code"] == code, request
    assert alice.request("topic", room="#dev", text="é" * 195)["op"] == "ok"  # 390 bytes


def test_a_topic_survives_a_restart_and_goes_with_its_room(spawn_server):
    first = spawn_server()
    alice = first.client("alice")
    alice.join("#keep")
    alice.request("say", room="#keep", text="history keeps the room")
    assert alice.request("topic", room="#keep", text="kept")["op"] == "ok"
    alice.join("passing")
    assert alice.request("topic", room="passing", text="gone with the room")["op"] == "ok"
    alice.request("leave", room="passing")
    assert alice.request("rooms")["rooms"] == [{"room": "#keep", "members": 1}]
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0

    second = spawn_server()
    bob = second.client("bob")
    assert bob.request("topic", room="#keep")["topic"]["text"] == "kept"
    assert bob.join("#keep")["topic"]["by"] == "alice"
    assert bob.join("passing").get("topic") is None  # a new room: no topic of the old one


def test_a_moderated_room_hears_only_its_operators_and_voiced_members(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for client in (alice, bob, carol):
        client.join("#stage")
    assert alice.request("mode", room="#stage", change="+m")["op"] == "ok"
    assert alice.request("mode", room="#stage", change="+v", nick="bob")["op"] == "ok"
    refused = carol.request("say", room="#stage", text="me too")
    assert refused["code"] == "moderated"
    assert bob.request("say", room="#stage", text="voiced")["seq"] == 1
    assert alice.request("say", room="#stage", text="operator")["seq"] == 2
    who = carol.request("who", room="#stage")
    assert (who["voiced"], who["moderated"]) == (["bob"], True)
    alice.request("mode", room="#stage", change="-m")
    assert carol.request("say", room="#stage", text="free again")["seq"] == 3
    texts = [f["text"] for f in carol.drain() + list(carol.pending) if f["op"] == "msg"]
    assert "me too" not in texts


def test_a_topic_written_while_its_room_ends_goes_with_the_room(make_server, connect, monkeypatch):
    # The store is slow to write the topic; meanwhile its setter is kicked and the
    # room ends. The topic must not outlive the room.
    write = SqliteHistory._write_topic

    def slow_write(self, room, topic):
        time.sleep(0.3)  # in the writer thread: a busy disk
        write(self, room, topic)

    monkeypatch.setattr(SqliteHistory, "_write_topic", slow_write)
    server = make_server()
    alice, bob = connect("alice", server), connect("bob", server)
    alice.join("#x")
    bob.join("#x")
    alice.request("mode", room="#x", change="+o", nick="bob")
    alice.send({"op": "topic", "room": "#x", "text": "stale", "id": "t"})
    gevent.sleep(0.05)  # the write is under way
    assert bob.request("kick", room="#x", nick="alice")["op"] == "ok"
    assert bob.request("leave", room="#x")["op"] == "ok"  # nobody is in #x now
    assert alice.reply_to("t")["op"] == "ok"
    with gevent.Timeout(5, AssertionError("the topic of the ended room is still stored")):
        while server.store.topic("#x") is not None:
            gevent.sleep(0.02)
    assert "topic" not in connect("carol", server).join("#x")
