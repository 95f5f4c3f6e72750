"""IRC on a cluster: an IRC user on each node, and JSON users, in one room."""

from __future__ import annotations

from gchat.irc.codec import Message
from tests.cluster.conftest import free_port
from tests.irc.test_door import IrcClient


def test_irc_users_on_two_nodes_and_a_json_user_share_a_room(spawn_node):
    ports = free_port(), free_port()
    nodes = [spawn_node("--irc-port", str(port), "--irc-name", "irc.test") for port in ports]
    bob, carol = IrcClient(ports[0]), IrcClient(ports[1])
    bob.register("bob")
    carol.register("carol")
    alice = nodes[1].client("alice")
    alice.join("#mixed")
    for client in (bob, carol):
        client.join("#mixed")
    bob.sync()
    carol.sync()

    bob.send("PRIVMSG #mixed :from node one")
    assert carol.until("PRIVMSG")[-1] == Message("PRIVMSG", ("#mixed", "from node one"),
                                                 source="bob!bob@irc.test")
    msg = alice.recv_until(lambda f: f.get("op") == "msg")[-1]
    assert (msg["from"], msg["text"], msg["seq"]) == ("bob", "from node one", 1)
    alice.request("say", room="#mixed", text="from json")
    for client in (bob, carol):
        assert client.until("PRIVMSG")[-1].params == ("#mixed", "from json")
    carol.send("PRIVMSG bob :a whisper across nodes")
    assert bob.until("PRIVMSG")[-1] == Message("PRIVMSG", ("bob", "a whisper across nodes"),
                                               source="carol!carol@irc.test")
    other = IrcClient(ports[1])  # nicks are unique in the cluster, whatever the door
    other.send("NICK Bob", "USER b 0 * :b")
    assert other.recv().command == "433"
    bob.send("QUIT :bye")
    assert carol.until("QUIT")[-1].source == "bob!bob@irc.test"
