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


def test_channel_names_fold_case_across_nodes(spawn_node):
    ports = free_port(), free_port()
    for port in ports:
        spawn_node("--irc-port", str(port), "--irc-name", "irc.test")
    bob, carol = IrcClient(ports[0]), IrcClient(ports[1])
    bob.register("bob")
    carol.register("carol")
    bob.join("#Dev")
    carol.send("JOIN #DEV")
    assert carol.until("366")[0].params == ("#Dev",)  # the room that exists, as it is called
    assert bob.until("JOIN")[-1] == Message("JOIN", ("#Dev",), source="carol!carol@irc.test")
    carol.send("PRIVMSG #dev :one room")
    assert bob.until("PRIVMSG")[-1].params == ("#Dev", "one room")


def test_part_and_quit_reasons_and_client_tags_cross_nodes(spawn_node):
    ports = free_port(), free_port()
    for port in ports:
        spawn_node("--irc-port", str(port), "--irc-name", "irc.test")
    bob, carol = IrcClient(ports[0]), IrcClient(ports[1])
    for client, nick in ((bob, "bob"), (carol, "carol")):
        client.send("CAP REQ :message-tags", f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP END")
        client.until("422")
        client.join("#far", "#wide")
    bob.sync()
    bob.send("@+draft/react=\\sok PRIVMSG #far :tagged")
    got = carol.until("PRIVMSG")[-1]
    assert got.params == ("#far", "tagged") and got.tags["+draft/react"] == " ok"
    bob.send("PART #far :see you")
    assert carol.until("PART")[-1] == Message("PART", ("#far", "see you"), source="bob!bob@irc.test")
    bob.send("QUIT :gone fishing")
    assert carol.until("QUIT")[-1].params == ("Quit: gone fishing",)
