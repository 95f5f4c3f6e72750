"""The join script decides an IRC channel's room itself (docs/irc.md, Case): two IRC
users joining #Dev and #dev on two nodes at once get one room, since the lookup and
the join are one step in Redis. Driven here through the backplane's own calls, on a
real Redis, without a node (nothing subscribes)."""

from __future__ import annotations

from gchat.server.backplane import RedisBackplane


def test_the_join_script_folds_an_irc_channel_to_the_existing_room(redis_server):
    backplane = RedisBackplane(redis_server.url, 5.0, 100, 100, on_payload=lambda payload: None,
                               state=lambda: ([], []), on_resync=lambda conflicts, back: None)
    assert backplane.claim(1, "alice") and backplane.claim(2, "bob")
    created = backplane.join(1, "alice", "#Dev", "t1", None, 500, 20)
    assert created is not None and created[0] == "#Dev"
    folded = backplane.join(2, "bob", "#dev", "t2", None, 500, 20, fold=True)
    assert folded is not None and folded[0] == "#Dev"
    assert sorted(folded[2].values()) == ["alice", "bob"]
    exact = backplane.join(2, "bob", "#DEV", "t3", None, 500, 20)  # JSON: case-sensitive
    assert exact is not None and exact[0] == "#DEV" and list(exact[2].values()) == ["bob"]
    fresh = backplane.join(1, "alice", "#new", "t4", None, 500, 20, fold=True)  # nothing to fold to
    assert fresh is not None and fresh[0] == "#new"
