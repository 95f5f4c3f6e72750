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
    assert alice.request("mode", room="#ops", change="+m")["code"] == "unsupported"
    for client in (alice, carol):  # the room ends; made again, it has a new creator
        if client is alice:
            alice.request("leave", room="#ops")
        else:
            carol.send("PART #ops")
            carol.until("PART")
    assert bob.join("#ops")["ops"] == ["bob"]
    assert bob.request("topic", room="#ops")["topic"] is None  # no history: it was gone
