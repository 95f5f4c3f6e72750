"""Accounts on a cluster: one account store (Redis) for every node, and private
messages between accounts on two nodes kept for both (draft/chathistory)."""

from __future__ import annotations

import base64

from tests.cluster.conftest import free_port
from tests.irc.test_door import IrcClient

PASSWORD = "open sesame"


def sasl_client(port: int, nick: str, password: str) -> IrcClient:
    client = IrcClient(port)
    plain = base64.b64encode(f"\0{nick}\0{password}".encode()).decode()
    client.send("CAP LS 302", "CAP REQ :sasl message-tags server-time draft/chathistory batch",
                "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain}")
    assert client.until("903")[-2].params[2] == nick
    client.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP END")
    client.until("422")
    return client


def test_an_account_made_on_one_node_logs_in_on_another(spawn_node):
    first_port, second_port = free_port(), free_port()
    first = spawn_node("--irc-port", str(first_port), "--irc-name", "one.test")
    second = spawn_node("--irc-port", str(second_port), "--irc-name", "two.test")
    alice = first.client()
    alice.hello("alice", proto=2)
    assert alice.request("register", password=PASSWORD)["account"] == "alice"
    alice.request("quit")
    guest = second.client()
    assert guest.request("hello", nick="alice")["code"] == "account_required"
    assert guest.request("hello", nick="alice", password="nope")["code"] == "bad_password"
    assert guest.hello("alice", password=PASSWORD, proto=2)["account"] == "alice"
    guest.request("quit")
    bob = first.client()
    bob.hello("bob", proto=2)
    assert bob.request("register", password=PASSWORD)["op"] == "ok"
    bob.request("quit")
    # Two accounts on two nodes whisper: each keeps the conversation, one msgid.
    alice_irc = sasl_client(first_port, "alice", PASSWORD)
    bob_irc = sasl_client(second_port, "bob", PASSWORD)
    alice_irc.send("PRIVMSG bob :across the cluster")
    delivered = bob_irc.until("PRIVMSG")[-1]
    bob_irc.send("PRIVMSG alice :and back")
    alice_irc.until("PRIVMSG")
    for client, peer in ((alice_irc, "bob"), (bob_irc, "alice")):
        client.sync()
        client.send(f"CHATHISTORY LATEST {peer} * 10")
        client.until("BATCH")  # BATCH +
        lines = client.until("BATCH")  # ... BATCH -
        texts = [m.params[1] for m in lines if m.command == "PRIVMSG"]
        assert texts == ["across the cluster", "and back"], lines
        first_id = next(m.tags["msgid"] for m in lines if m.command == "PRIVMSG")
        assert first_id == delivered.tags["msgid"]
