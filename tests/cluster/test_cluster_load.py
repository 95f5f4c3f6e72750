"""Load across two nodes: every acknowledged say reaches every subscriber, on either
node, in seq order (PROTOCOL.md 6, guarantees 1 and 2), and once everyone has left,
the cluster's shared state in Redis is empty again (guarantee 4).

Sized like tests/reliability/test_load.py, whose clients it reuses; `make soak` runs
both bigger and longer.
"""

from __future__ import annotations

import time

import gevent

from tests.reliability.test_load import (
    PUBLISHERS,
    ROOMS,
    SECONDS,
    SUBSCRIBERS,
    Subscriber,
    publish,
    wait_until,
)


def test_nothing_acknowledged_is_lost_across_nodes_and_nothing_is_left_behind(spawn_node, redis_server):
    nodes = [spawn_node(), spawn_node()]
    subscribers = [Subscriber(nodes[index % 2], index) for index in range(SUBSCRIBERS)]
    acked: dict[str, dict[int, str]] = {f"#load{r}": {} for r in range(ROOMS)}
    deadline = time.monotonic() + SECONDS
    publishers = [gevent.spawn(publish, nodes[(index + 1) % 2], index, acked, deadline)
                  for index in range(PUBLISHERS)]
    gevent.joinall(publishers, raise_error=True)

    for subscriber in subscribers:
        last = max(acked[subscriber.room], default=0)
        wait_until(lambda s=subscriber, n=last: (s.seqs[-1] if s.seqs else 0) >= n, 30,
                   f"{subscriber.room}: not every msg arrived")
        assert subscriber.kept_up(), subscriber.bye
        assert subscriber.seqs == list(range(1, last + 1)), "a gap, a duplicate or a reordering"
        for seq, text in acked[subscriber.room].items():
            assert subscriber.texts[seq] == text
    total = sum(len(room) for room in acked.values())
    print(f"\n2 nodes, {PUBLISHERS} publishers, {SUBSCRIBERS} subscribers in {ROOMS} rooms, "
          f"{SECONDS:g} s: {total} says acknowledged, all "
          f"{sum(len(s.seqs) for s in subscribers)} deliveries owed arrived, lost 0")

    for index, subscriber in enumerate(subscribers):  # everyone leaves, some politely
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
