"""On a cluster node too, a session that has ended runs no more requests (PROTOCOL.md 6,
guarantee 4): see tests/reliability/test_ended_sessions.py for the scenario."""

from __future__ import annotations

from tests.reliability.test_ended_sessions import SMALL_QUEUE, drop_while_waiting


def test_on_a_cluster_node_a_dropped_session_s_nick_request_claims_nothing(spawn_node):
    node, other = spawn_node(*SMALL_QUEUE), spawn_node()
    address = ("127.0.0.1", node.port)
    bob = node.client("bob")
    bob.join("r")
    drop_while_waiting(address, {"op": "nick", "nick": "renamed", "id": 1}, bob)

    for where in (node, other):  # on every node, both nicks are free
        for nick in ("ghost", "renamed"):
            client = where.client()
            assert client.request("hello", nick=nick)["op"] == "ok"
            client.request("quit")
    carol = other.client("carol")
    assert carol.request("whisper", to="renamed", text="hi")["code"] == "no_such_nick"
    assert b"Traceback" not in node.log
