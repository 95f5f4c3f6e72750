"""Several gchat nodes sharing rooms through a real Redis (PROTOCOL.md 3: nicks unique
per cluster; 6: one order per room on every node)."""

from __future__ import annotations

import os
import signal
import socket

import gevent
import pytest

from tests.client.test_script import ClientProcess
from tests.cluster.conftest import NODE_TIMEOUT
from tests.server.process import run


class Flood:
    """`client` pipelines says to `room`, `batch` every 5 ms (ids 0, 1, ...), until stop()."""

    def __init__(self, client, room: str, batch: int) -> None:
        self.client, self.room, self.batch = client, room, batch
        self.sent = 0
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.client.send(*({"op": "say", "room": self.room, "text": f"m{n}", "id": n}
                               for n in range(self.sent, self.sent + self.batch)))
            self.sent += self.batch
            gevent.sleep(0.005)

    def stop(self) -> None:
        self._greenlet.kill()


def _room_events(frames, room):
    return [f for f in frames if f.get("room") == room and f["op"] in ("msg", "presence")]


def test_a_say_reaches_members_on_every_node_with_one_seq(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice, bob = one.client("alice"), two.client("bob")
    alice.join("lobby")
    joined = bob.join("lobby")
    assert joined["members"] == ["alice", "bob"]
    assert alice.recv() == {"op": "presence", "room": "lobby", "nick": "bob", "event": "join"}

    reply = alice.request("say", room="lobby", text="hi bob")
    assert reply == {"op": "ok", "id": reply["id"], "room": "lobby", "seq": 1}
    mine = alice.pending.popleft()  # the msg came before the ok
    theirs = bob.recv()
    assert mine == theirs and theirs["seq"] == 1 and theirs["from"] == "alice"
    assert bob.request("say", room="lobby", text="hi alice")["seq"] == 2
    assert alice.recv()["seq"] == 2


@pytest.mark.parametrize("count", [2, 3])
def test_every_member_on_every_node_sees_one_order(spawn_node, count):
    nodes = [spawn_node() for _ in range(count)]
    observers = [nodes[i % count].client(f"watcher{i}") for i in range(4)]
    for watcher in observers:
        watcher.join("r")
    senders = [nodes[(i + 1) % count].client(f"sender{i}") for i in range(4)]
    for sender in senders:
        sender.join("r")
    per_sender = 50

    def flood(index, client):
        client.send(*({"op": "say", "room": "r", "text": f"{index}:{n}", "id": n}
                      for n in range(per_sender)))
        client.recv_until(lambda f: f.get("id") == per_sender - 1 and f["op"] == "ok", timeout=20)

    def churn():  # presence interleaved with the messages
        for n in range(5):
            extra = nodes[n % count].client(f"churn{n}")
            extra.join("r")
            extra.request("leave", room="r")

    gevent.joinall([gevent.spawn(flood, i, c) for i, c in enumerate(senders)] + [gevent.spawn(churn)],
                   raise_error=True)
    total = per_sender * len(senders)
    views = []
    for watcher in observers:
        frames = watcher.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == total, timeout=20)
        events = _room_events(frames, "r")
        views.append([(e["op"], e.get("seq"), e.get("nick"), e.get("event")) for e in events])
        seqs = [e["seq"] for e in events if e["op"] == "msg"]
        assert seqs == list(range(1, total + 1))
        for index in range(len(senders)):  # each sender's order is kept
            texts = [e["text"] for e in events if e["op"] == "msg" and e["from"] == f"sender{index}"]
            assert texts == [f"{index}:{n}" for n in range(per_sender)]
    # The watchers joined before any sender: from the senders' joins on, their views agree.
    tail = [view[view.index(("presence", None, "sender3", "join")):] for view in views]
    assert all(view == tail[0] for view in tail), "members on different nodes saw different orders"


def test_a_join_gets_history_then_live_messages_without_gap_or_duplicate(spawn_node):
    one, two = spawn_node(), spawn_node()
    talker = one.client("talker")
    talker.join("busy")
    count = 300
    talker.send(*({"op": "say", "room": "busy", "text": f"m{n}", "id": n} for n in range(count)))
    gevent.sleep(0)  # let the says start flowing while bob joins
    bob = two.client("bob")
    reply = bob.join("busy", after=0)
    seqs = [m["seq"] for m in reply["history"]]
    last = seqs[-1] if seqs else 0
    assert seqs == list(range(1, last + 1)) and reply["recovered"] is True
    if last < count:
        live = bob.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == count)
        seqs += [f["seq"] for f in live if f["op"] == "msg"]
    assert seqs == list(range(1, count + 1))


def test_nicks_are_unique_across_the_cluster_and_freed_on_quit(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice = one.client("alice")
    rival = two.client()
    assert rival.request("hello", nick="ALICE")["code"] == "nick_taken"
    bob = two.client("bob")
    assert bob.request("nick", nick="Alice")["code"] == "nick_taken"
    assert alice.request("ping")["op"] == "ok"
    owner = one.client("carol")
    owner.request("quit")
    assert owner.read_until_closed()[-1] == {"op": "bye", "reason": "quit"}
    with gevent.Timeout(5, AssertionError("the nick was never freed")):
        while rival.request("hello", nick="Carol")["op"] != "ok":
            gevent.sleep(0.05)


def test_who_rooms_whisper_and_history_are_cluster_wide(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice, bob = one.client("alice"), two.client("bob")
    alice.join("#a")
    bob.join("#b")
    alice.request("say", room="#a", text="stored on node one")
    alice.pending.clear()  # its msg
    assert bob.request("who", room="#a")["members"] == ["alice"]
    rooms = bob.request("rooms")["rooms"]
    assert rooms == [{"room": "#a", "members": 1}, {"room": "#b", "members": 1}]
    messages = bob.request("history", room="#a")["messages"]
    assert [m["text"] for m in messages] == ["stored on node one"]

    assert bob.request("whisper", to="ALICE", text="psst")["op"] == "ok"
    whisper = alice.recv()
    assert (whisper["op"], whisper["from"], whisper["text"]) == ("whisper", "bob", "psst")
    assert bob.request("whisper", to="nobody", text="x")["code"] == "no_such_nick"
    assert bob.request("who", room="#none")["code"] == "no_such_room"


def test_rename_is_seen_on_every_node(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice, bob = one.client("alice"), two.client("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.recv()  # bob's join
    assert bob.request("nick", nick="robert")["nick"] == "robert"
    assert alice.recv() == {"op": "presence", "room": "lobby", "nick": "robert", "event": "rename",
                            "old": "bob"}
    assert alice.request("who", room="lobby")["members"] == ["alice", "robert"]
    one.client("bob")  # the old nick is free again


def test_a_killed_node_s_sessions_quit_within_the_bound(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice = one.client("alice")
    alice.join("lobby")
    doomed = two.client("bob")
    doomed.join("lobby")
    alice.recv()  # bob's join
    two.kill()
    bound = NODE_TIMEOUT * 2 + 1  # the timeout, a heartbeat, and slack for a loaded machine
    assert alice.recv(timeout=bound) == {"op": "presence", "room": "lobby", "nick": "bob",
                                         "event": "quit"}
    assert alice.request("who", room="lobby")["members"] == ["alice"]
    one.client("bob")  # its nick is free
    assert alice.request("say", room="lobby", text="still here")["op"] == "ok"


def test_history_and_seq_outlive_every_node(spawn_node):
    first = spawn_node()
    alice = first.client("alice")
    alice.join("kept")
    for n in range(3):
        alice.request("say", room="kept", text=f"m{n}")
    first.kill()
    second = spawn_node()
    bob = second.client("bob")
    reply = bob.join("kept")
    assert [m["seq"] for m in reply["history"]] == [1, 2, 3]
    assert bob.request("say", room="kept", text="more")["seq"] == 4


def test_nodes_ride_out_a_redis_restart_with_clear_errors(spawn_node, redis_server):
    one, two = spawn_node(), spawn_node()
    alice, bob, carol = one.client("alice"), two.client("bob"), two.client("carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    assert alice.request("say", room="lobby", text="before")["seq"] == 1
    bob.recv_until(lambda f: f.get("op") == "msg")
    alice.pending.clear()

    redis_server.kill()
    for node in (one, two):
        node.wait_log(b"backplane unavailable")
    failed = alice.request("say", room="lobby", text="during the outage")
    assert failed["code"] == "unavailable" and "not acknowledged" in failed["message"]
    assert bob.request("who", room="lobby")["code"] == "unavailable"
    carol.request("quit")  # ends while Redis is away: the cluster learns it later

    redis_server.start()
    for node in (one, two):
        node.wait_log(b"is back", timeout=10)
    assert alice.request("say", room="lobby", text="after")["seq"] == 2  # seq kept (AOF)
    seen = alice.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == 2)
    assert [f for f in seen if f["op"] == "presence"] == [
        {"op": "presence", "room": "lobby", "nick": "carol", "event": "quit"}]
    got = bob.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == 2)
    assert [f["text"] for f in got if f["op"] == "msg"] == ["after"]  # nothing silently lost
    assert bob.request("who", room="lobby")["members"] == ["alice", "bob"]


def test_a_node_shut_down_tells_the_others_at_once(spawn_node):
    one, two = spawn_node(), spawn_node("--grace", "1")
    alice, bob = one.client("alice"), two.client("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.recv()  # bob's join
    two.proc.terminate()
    assert bob.read_until_closed() == [{"op": "bye", "reason": "shutdown"}]  # no presence
    assert two.finish() == 0
    # Sooner than a crash would be noticed: the node left the cluster as it stopped.
    assert alice.recv(timeout=NODE_TIMEOUT) == {"op": "presence", "room": "lobby", "nick": "bob",
                                                "event": "quit"}


def test_a_slow_consumer_on_one_node_is_dropped_and_the_others_see_it_quit(spawn_node):
    one, two = spawn_node(), spawn_node("--max-queue-frames", "50")
    alice, sleeper = one.client("alice"), two.client("sleeper")
    alice.join("lobby")
    sleeper.join("lobby")
    alice.recv()  # sleeper's join
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    text = "x" * 4000
    with gevent.Timeout(20, AssertionError("the sleeper was never dropped")):
        while True:
            alice.send(*({"op": "say", "room": "lobby", "text": text} for _ in range(20)))
            frames = alice.drain()
            quits = [f for f in frames if f["op"] == "presence"]
            if quits:
                break
    assert quits == [{"op": "presence", "room": "lobby", "nick": "sleeper", "event": "quit"}]
    assert alice.request("who", room="lobby")["members"] == ["alice"]


def test_a_bad_backplane_is_a_usage_error_and_an_unreachable_one_a_clear_exit(redis_server):
    bad = run("--backplane", "http://localhost:6379")
    assert bad.returncode == 2 and b"--backplane must be a redis://HOST:PORT/DB URL" in bad.stderr
    port = redis_server.port
    redis_server.kill()
    down = run("--port", "0", env={"GCHAT_BACKPLANE": f"redis://:s3cret@127.0.0.1:{port}/0"})
    assert down.returncode == 1
    assert down.stderr.startswith(b"gchat-server: cannot join the cluster: backplane "
                                  b"redis://:***@127.0.0.1:")  # the password is not shown
    assert b"s3cret" not in down.stderr and b"Traceback" not in down.stderr


def test_a_lost_subscription_is_caught_up_without_loss_or_duplicate(spawn_node, redis_server):
    one, two = spawn_node(), spawn_node()
    talker, listener = one.client("talker"), two.client("listener")
    talker.join("flood")
    listener.join("flood")
    total = 400
    talker.send(*({"op": "say", "room": "flood", "text": f"m{n}", "id": n} for n in range(total)))
    # Meanwhile Redis drops every node's subscription, as a network blip would.
    admin = redis_server.client()
    killed = admin.command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed.startswith(b":") and int(killed[1:]) >= 1
    replies = talker.recv_until(lambda f: f.get("id") == total - 1, timeout=20)
    acked = {f["seq"] for f in replies if f["op"] == "ok"}
    last = max(acked)
    frames = listener.recv_until(lambda f: f.get("op") == "msg" and f["seq"] >= last, timeout=20)
    seqs = [f["seq"] for f in frames if f["op"] == "msg"]
    assert seqs == list(range(1, last + 1)), "a member missed or repeated messages"
    assert acked <= set(seqs)


def test_every_say_acknowledged_before_redis_is_killed_is_in_the_history_after(spawn_node, redis_server):
    node = spawn_node()
    talker = node.client("talker")
    talker.join("kept")
    flood = Flood(talker, "kept", 50)  # says keep coming while Redis dies under them
    frames = talker.recv_until(lambda f: f.get("op") == "ok" and f["id"] >= 300)
    redis_server.kill()
    frames += talker.recv_until(lambda f: f.get("op") == "error")
    flood.stop()
    frames += talker.recv_until(lambda f: f.get("id") == flood.sent - 1, timeout=20)
    acked = [f["seq"] for f in frames if f["op"] == "ok"]
    failed = [f for f in frames if f["op"] == "error"]
    assert len(acked) + len(failed) == flood.sent  # every say answered: none silently lost
    assert all(f["code"] == "unavailable" for f in failed)

    redis_server.start()
    node.wait_log(b"is back", timeout=10)
    reader = node.client("reader")
    stored: list[int] = []
    while page := reader.request("history", room="kept", after=stored[-1] if stored else 0,
                                 limit=100)["messages"]:
        stored += [m["seq"] for m in page]
    assert set(acked) <= set(stored), f"{len(set(acked) - set(stored))} acknowledged says were lost"
    assert stored == list(range(1, len(stored) + 1))


def test_a_node_judged_dead_that_comes_back_rejoins_its_sessions(spawn_node):
    one, two = spawn_node(), spawn_node()
    alice, bob = one.client("alice"), two.client("bob")
    alice.join("lobby")
    bob.join("lobby")
    assert bob.join("#solo")["ops"] == ["bob"]  # a room only node two's session is in
    alice.recv()  # bob's join
    os.kill(two.proc.pid, signal.SIGSTOP)  # a node cut off for longer than --node-timeout
    try:
        quit_ = alice.recv(timeout=NODE_TIMEOUT * 2 + 1)
        assert quit_ == {"op": "presence", "room": "lobby", "nick": "bob", "event": "quit"}
        assert alice.request("who", room="lobby")["members"] == ["alice"]
    finally:
        os.kill(two.proc.pid, signal.SIGCONT)
    two.wait_log(b"had been dropped from the cluster")
    # Its session is still connected: the cluster learns it again, and every view matches who.
    assert alice.recv(timeout=5) == {"op": "presence", "room": "lobby", "nick": "bob", "event": "join"}
    assert alice.request("who", room="lobby")["members"] == ["alice", "bob"]
    assert bob.request("say", room="lobby", text="back")["op"] == "ok"
    assert alice.recv_until(lambda f: f["op"] == "msg")[-1]["text"] == "back"
    assert alice.request("say", room="lobby", text="welcome back")["op"] == "ok"  # bob is still in
    assert bob.recv_until(lambda f: f.get("text") == "welcome back")[-1]["from"] == "alice"
    # Back in a room nobody else is in, it runs it again (not a room without operators).
    assert bob.request("who", room="#solo")["ops"] == ["bob"]
    assert bob.request("topic", room="#solo", text="still mine")["op"] == "ok"


def test_presence_missed_while_a_node_was_unsubscribed_is_told_when_it_returns(spawn_node, redis_server):
    one, two = spawn_node(), spawn_node()
    alice, bob, carol = one.client("alice"), two.client("bob"), two.client("carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    alice.recv_until(lambda f: f.get("nick") == "carol")  # the joins so far
    bob.recv_until(lambda f: f.get("nick") == "carol")
    os.kill(one.proc.pid, signal.SIGSTOP)  # node one is away, for less than --node-timeout
    try:
        redis_server.client().command("CLIENT", "KILL", "TYPE", "pubsub")
        two.wait_log(b"is back")
        carol.request("quit")  # both published while node one is not subscribed
        assert bob.recv_until(lambda f: f["op"] == "presence")[-1]["event"] == "quit"
        dave = two.client("dave")
        dave.join("lobby")
        assert bob.recv_until(lambda f: f["op"] == "presence")[-1]["nick"] == "dave"
    finally:
        os.kill(one.proc.pid, signal.SIGCONT)
    one.wait_log(b"is back")
    seen = alice.drain()
    assert [f for f in seen if f["op"] == "presence"] == [
        {"op": "presence", "room": "lobby", "nick": "carol", "event": "quit"},
        {"op": "presence", "room": "lobby", "nick": "dave", "event": "join"}]
    assert alice.request("who", room="lobby")["members"] == ["alice", "bob", "dave"]
    dave.request("leave", room="lobby")  # and live presence flows again, once
    assert alice.recv() == {"op": "presence", "room": "lobby", "nick": "dave", "event": "leave"}


def test_a_leaver_gets_exactly_the_messages_before_its_leave_on_every_node(spawn_node):
    one, two = spawn_node(), spawn_node()
    talker, observer, leaver = one.client("talker"), one.client("observer"), two.client("leaver")
    for client in (talker, observer, leaver):
        client.join("busy")
    flood = Flood(talker, "busy", 20)  # says keep coming while the leaver leaves
    early = leaver.recv_until(lambda f: f.get("op") == "msg" and f["seq"] >= 50)
    leaver.request("leave", room="busy")
    target = flood.sent + 40  # more says after the leave
    talker.recv_until(lambda f: f.get("op") == "ok" and f["id"] >= target)
    mine = [f["seq"] for f in [*early, *leaver.pending, *leaver.drain()] if f.get("op") == "msg"]
    flood.stop()
    replies = talker.recv_until(lambda f: f.get("id") == flood.sent - 1)
    last = max(f["seq"] for f in replies if f["op"] == "ok")
    seen = observer.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == last, timeout=20)
    events = [(f["op"], f.get("seq"), f.get("event")) for f in seen if f["op"] in ("msg", "presence")]
    cut = events.index(("presence", None, "leave"))
    before = [seq for op, seq, _ in events[:cut] if op == "msg"]
    assert cut < len(events) - 1, "the leave came after the flood: the test proves nothing"
    assert before and before == list(range(1, len(before) + 1))
    assert sorted(set(mine)) == before  # everything before its leave, nothing after


def test_the_client_fails_over_to_another_node_and_misses_nothing(spawn_node):
    one, two = spawn_node(), spawn_node()
    bob = two.client("bob")
    bob.join("lobby")
    client = ClientProcess(one.port, "--nick", "alice", "--fallback", f"127.0.0.1:{two.port}",
                           "--room", "lobby", "--json")
    try:
        bob.recv_until(lambda f: f.get("nick") == "alice")  # alice joined, through node one
        bob.request("say", room="lobby", text="hello alice")
        client.events(lambda e: e.get("text") == "hello alice")  # and her client is in the room
        one.kill()
        # bob talks while alice is away; her nick comes free once node one is judged dead
        assert bob.request("say", room="lobby", text="while you were away")["op"] == "ok"
        client.wait_err(f"reconnected to 127.0.0.1:{two.port}".encode())
        assert bob.request("say", room="lobby", text="welcome back")["op"] == "ok"
        seen = client.events(lambda e: e.get("op") == "msg" and e["text"] == "welcome back")
        assert [e["text"] for e in seen if e.get("op") == "msg"] == ["while you were away", "welcome back"]
        code, _ = client.finish()
        assert code == 0
    finally:
        client.kill()


def test_pipelined_says_arrive_as_before_on_both_nodes(spawn_node):
    # Msgs of one room that reach a node together are queued as one run (publish.py):
    # each member still gets every msg in seq order, and the sender each msg, then
    # its ok, just as message by message.
    one, two = spawn_node(), spawn_node()
    alice, bob, carol = one.client("alice"), one.client("bob"), two.client("carol")
    for client in (alice, bob, carol):
        client.join("run")
    alice.recv_until(lambda f: f.get("op") == "presence" and f["nick"] == "carol")
    bob.recv_until(lambda f: f.get("op") == "presence" and f["nick"] == "carol")
    says = 30
    alice.send(*({"op": "say", "room": "run", "text": f"m{n}", "id": n} for n in range(says)))
    carol.send({"op": "say", "room": "run", "text": "c", "id": "c"})
    for client in (bob, carol):
        frames = client.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == says + 1)
        msgs = [f for f in frames if f.get("op") == "msg"]
        assert [f["seq"] for f in msgs] == list(range(1, says + 2))
    frames = alice.recv_until(lambda f: f.get("id") == says - 1)
    mine = [f for f in frames if f["op"] in ("msg", "ok") and f.get("from", "alice") == "alice"
            and f.get("id") != "c"]
    pairs = list(zip(mine[::2], mine[1::2], strict=True))
    assert [(msg["op"], ok["op"], ok["id"], msg["seq"] == ok["seq"]) for msg, ok in pairs] \
        == [("msg", "ok", n, True) for n in range(says)]
