"""Room topics and operators on a cluster (docs/protocol.md): the creator runs the room
whichever node it is on, the topic lives in Redis, and an operator on one node kicks a
member of another."""

from __future__ import annotations

from gchat.irc.codec import Message
from tests.cluster.conftest import free_port
from tests.irc.test_door import IrcClient


def test_topics_modes_and_kicks_cross_nodes(spawn_node):
    port = free_port()
    first, second = spawn_node(), spawn_node("--irc-port", str(port), "--irc-name", "irc.test")
    alice = first.client("alice")
    assert alice.join("#ops")["ops"] == ["alice"]  # the creator, on node one
    bob = second.client("bob")
    joined = bob.join("#ops")
    assert (joined["ops"], joined["topic_locked"]) == (["alice"], True)
    assert bob.request("topic", room="#ops", text="mine")["code"] == "not_operator"
    alice.drain()
    alice.send({"op": "topic", "room": "#ops", "text": "from node one", "id": 1})
    told = alice.recv()
    assert (told["op"], told["topic"], told["from"]) == ("topic", "from node one", "alice")
    assert alice.recv()["op"] == "ok"  # the event before the ok, as on one server
    assert bob.recv_until(lambda f: f["op"] == "topic")[-1] == told
    carol = IrcClient(port)
    carol.register("carol")
    got = carol.join("#ops")
    assert [(m.command, m.params[1:]) for m in got if m.command in ("332", "353")] == [
        ("332", ("#ops", "from node one")), ("353", ("=", "#ops", "@alice bob carol"))]
    assert alice.request("mode", room="#ops", change="+o", nick="CAROL")["op"] == "ok"
    assert carol.until("MODE")[-1] == Message("MODE", ("#ops", "+o", "carol"),
                                              source="alice!alice@irc.test")
    carol.send("MODE #ops -t")
    carol.until("MODE")
    assert bob.request("who", room="#ops")["topic_locked"] is False
    assert bob.request("topic", room="#ops", text="anyone now")["op"] == "ok"
    carol.send("KICK #ops bob :across nodes")
    kicked = bob.recv_until(lambda f: f["op"] == "kicked")[-1]
    assert kicked == {"op": "kicked", "room": "#ops", "by": "carol", "reason": "across nodes"}
    gone = alice.recv_until(lambda f: f["op"] == "presence" and f["nick"] == "bob")[-1]
    assert (gone["event"], gone["by"]) == ("leave", "carol")
    assert bob.request("say", room="#ops", text="still?")["code"] == "not_in_room"
    assert alice.request("who", room="#ops")["members"] == ["alice", "carol"]
    assert alice.request("kick", room="#ops", nick="nobody")["code"] == "no_such_nick"
    # Voice and moderation: the say script refuses, in request order, whom +m silences.
    assert alice.request("mode", room="#ops", change="+m")["op"] == "ok"
    assert alice.request("mode", room="#ops", change="-o", nick="carol")["op"] == "ok"
    carol.until("MODE")
    carol.send("PRIVMSG #ops :may I?")
    assert carol.until("404")[-1].params[-1].endswith("only its operators and voiced members may speak")
    bob.join("#ops")  # back, a plain member on node two
    bob.send({"op": "say", "room": "#ops", "text": "silenced", "id": "s1"},
             {"op": "ping", "id": "p1"})
    assert bob.reply_to("s1")["code"] == "moderated"
    assert bob.reply_to("p1")["op"] == "ok"
    assert alice.request("mode", room="#ops", change="+v", nick="bob")["op"] == "ok"
    assert bob.request("say", room="#ops", text="voiced")["op"] == "ok"
    assert alice.recv_until(lambda f: f.get("text") == "voiced")[-1]["from"] == "bob"
    who = alice.request("who", room="#ops")
    assert (who["voiced"], who["moderated"]) == (["bob"], True)
    bob.request("leave", room="#ops")
    for client in (alice, carol):  # nobody is left in it; joined again, a new creator
        if client is alice:
            alice.request("leave", room="#ops")
        else:
            carol.send("PART #ops")
            while not carol.until("PART")[-1].source.startswith("carol!"):
                pass  # bob's PART came before: wait for carol's own
    assert bob.join("#ops")["ops"] == ["bob"]
    # The room kept its history (bob's voiced say), so it kept its topic too.
    assert bob.request("topic", room="#ops")["topic"]["text"] == "anyone now"


def test_a_say_redis_no_longer_sees_a_member_for_is_refused_in_its_turn(spawn_node, redis_server):
    # A kick reaches Redis before the kicked member's node hears of it: a say the node
    # still accepts meanwhile is refused by the say script, in request order, and is
    # neither stored nor delivered. (Here Redis forgets the membership directly.)
    node = spawn_node()
    alice = node.client()
    session = alice.hello("alice")["session"]
    alice.join("#k")
    watcher = node.client("watcher")
    watcher.join("#k")
    assert alice.request("say", room="#k", text="before")["seq"] == 1
    redis_server.client().command("HDEL", "gchat:room:#k:members", str(session))
    alice.send({"op": "say", "room": "#k", "text": "after", "id": "s"}, {"op": "ping", "id": "p"})
    assert alice.reply_to("s")["code"] == "not_in_room"
    assert alice.reply_to("p")["op"] == "ok"
    assert [m["text"] for m in watcher.request("history", room="#k")["messages"]] == ["before"]
