"""Load across two nodes: every acknowledged say reaches every subscriber, on either
node, in seq order (PROTOCOL.md 6, guarantees 1 and 2), and once everyone has left,
the cluster's shared state in Redis is empty again (guarantee 4).

Sized like tests/reliability/test_load.py, whose clients it reuses; `make soak` runs
both bigger and longer.
"""

from __future__ import annotations

from tests.reliability.test_load import PUBLISHERS, RATE, ROOM_NAMES, ROOMS, SECONDS, SUBSCRIBERS
from tests.soakclient import Soak, load_and_check, reporting, wait_until


def test_nothing_acknowledged_is_lost_across_nodes_and_nothing_is_left_behind(spawn_node, redis_server):
    nodes = [spawn_node(), spawn_node()]
    addresses = [("127.0.0.1", node.port) for node in nodes]
    soak = Soak("cluster", nodes, ROOM_NAMES, RATE, SECONDS)
    with reporting(soak):
        # Subscribers alternate between the nodes; so do publishers, from the other one.
        load_and_check(soak, lambda index: addresses[index % 2], lambda index: addresses[(index + 1) % 2],
                       SUBSCRIBERS, PUBLISHERS, ROOMS)

        soak.phase = "teardown"
        for index, subscriber in enumerate(soak.subscribers):  # everyone leaves, some politely
            subscriber.reader.kill()
            if index % 2:
                subscriber.client.request("quit")
            subscriber.client.close()
        admin = redis_server.client()
        # Only the rooms with history remain, with nobody in them; no node keeps a session.
        wait_until(lambda: admin.command("EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', "
                                         "'gchat:*members')) do n = n + redis.call('HLEN', k) end "
                                         "return n", "0") == b":0", 10, "memberships were left in Redis")
        for node_id in (1, 2):
            assert admin.command("HLEN", f"gchat:node:{node_id}:sessions") == b":0"
        assert admin.command("KEYS", "gchat:nick:*") == b"*0"
        rooms = nodes[0].client("counter").request("rooms")["rooms"]
        assert [(r["room"], r["members"]) for r in rooms] == sorted((f"#load{r}", 0) for r in range(ROOMS))
