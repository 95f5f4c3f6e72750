"""CHATHISTORY (draft/chathistory, draft/event-playback): the pure query parser and
selection, then the door over real sockets, with history that outlives a restart."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gchat.server.chathistory import (
    LogSource,
    Query,
    QueryError,
    RoomSource,
    parse_query,
    parse_timestamp,
    select,
)
from gchat.server.eventlog import ROOM_STEP, LogEntry, MemoryEventLog
from tests.irc.test_door import IrcClient, free_port
from tests.rawclient import Client

CAPS = "message-tags server-time batch echo-message labeled-response sasl draft/chathistory"


# -- pure ------------------------------------------------------------------------------------

def test_timestamps_parse_to_milliseconds():
    assert parse_timestamp("2020-01-01T00:00:00.000Z") == 1577836800000
    assert parse_timestamp("2020-01-01T00:00:01.5Z") == 1577836801500
    assert parse_timestamp("2020-01-01T00:00:01Z") == 1577836801000
    for bad in ("2020-01-01", "2020-13-01T00:00:00Z", "yesterday", ""):
        assert parse_timestamp(bad) is None


def test_queries_parse_or_say_why_not():
    assert parse_query(("latest", "#a", "*", "10")) == Query("LATEST", "#a", (("*", None),), 10)
    assert parse_query(("BETWEEN", "#a", "msgid=x", "timestamp=2020-01-01T00:00:00Z", "500")) \
        == Query("BETWEEN", "#a", (("msgid", "x"), ("timestamp", 1577836800000)), 100)
    for params, code in [((), "NEED_MORE_PARAMS"), (("LATEST", "#a", "*"), "NEED_MORE_PARAMS"),
                         (("FROB", "#a", "*", "1"), "INVALID_PARAMS"),
                         (("BEFORE", "#a", "*", "1"), "INVALID_PARAMS"),
                         (("AFTER", "#a", "msgid=", "1"), "INVALID_PARAMS"),
                         (("LATEST", "#a", "*", "-1"), "INVALID_PARAMS"),
                         (("TARGETS", "msgid=a", "msgid=b", "1"), "INVALID_PARAMS")]:
        with pytest.raises(QueryError) as caught:
            parse_query(params)
        assert caught.value.code == code


@given(st.lists(st.text(max_size=30), max_size=6))
def test_any_parameters_give_a_query_or_a_query_error(params):
    try:
        query = parse_query(tuple(params))
    except QueryError:
        return
    assert 0 <= query.limit <= 100


class Reader:
    """A room's messages as ChatServer.history gives them: seq 1..n at ts 1000 * seq."""

    def __init__(self, count: int) -> None:
        self.messages = [json.dumps({"op": "msg", "room": "r", "from": "a", "text": str(seq),
                                     "seq": seq, "ts": 1000 * seq}).encode()
                         for seq in range(1, count + 1)]

    def history(self, name, before, after, limit):
        if after is not None:
            return self.messages[after:after + limit]
        end = len(self.messages) if before is None else max(0, min(before - 1, len(self.messages)))
        return self.messages[max(0, end - limit):end]


def texts(items):
    return [item.fields.get("text", item.fields.get("topic")) for item in items]


def test_room_selection_by_msgid_and_timestamp():
    source = RoomSource(Reader(10), None, "r", "room:r")
    query = lambda text: select(source, parse_query(tuple(text.split())))  # noqa: E731
    assert texts(query("LATEST r * 3")) == ["8", "9", "10"]
    assert texts(query("LATEST r msgid=r:8 5")) == ["9", "10"]
    assert texts(query("BEFORE r msgid=r:4 10")) == ["1", "2", "3"]
    assert texts(query("AFTER r msgid=r:8 10")) == ["9", "10"]
    assert texts(query("BETWEEN r msgid=r:2 msgid=r:6 2")) == ["3", "4"]
    assert texts(query("BETWEEN r msgid=r:6 msgid=r:2 2")) == ["4", "5"]
    assert texts(query("AROUND r msgid=r:5 3")) == ["4", "5", "6"]
    at = "timestamp=1970-01-01T00:00:05.000Z"  # message 5's time
    assert texts(query(f"BEFORE r {at} 10")) == ["1", "2", "3", "4"]
    assert texts(query(f"AFTER r {at} 2")) == ["6", "7"]
    assert texts(query(f"AROUND r {at} 1")) == ["5"]
    assert texts(query("AFTER r msgid=other:1 2")) == []  # another room's msgid names nothing
    assert texts(query("AFTER r timestamp=2100-01-01T00:00:00Z 2")) == []


def test_room_events_merge_between_messages():
    log = MemoryEventLog()
    topic = {"op": "topic", "room": "r", "topic": "t", "from": "a", "ts": 5500}
    log.log_append([("room:r", LogEntry(5 * ROOM_STEP + 1, 5500, "r:5.1",
                                        json.dumps(topic).encode()))])
    source = RoomSource(Reader(10), log, "r", "room:r")
    got = select(source, parse_query(("AFTER", "r", "msgid=r:4", "3")))
    assert [item.msgid for item in got] == ["r:5", "r:5.1", "r:6"]
    got = select(source, parse_query(("BEFORE", "r", "timestamp=1970-01-01T00:00:06Z", "2")))
    assert [item.msgid for item in got] == ["r:5", "r:5.1"]


def test_private_logs_select_by_position():
    log = MemoryEventLog()
    log.log_append([("dm:a:b", LogEntry(ts * 1000, ts, f"~{ts * 1000}",
                                        json.dumps({"op": "whisper", "text": str(ts)}).encode()))
                    for ts in (10, 20, 30)])
    source = LogSource(log, "dm:a:b", with_events=False)
    assert texts(select(source, parse_query(("AFTER", "b", "msgid=~10000", "5")))) == ["20", "30"]
    assert texts(select(source, parse_query(
        ("BEFORE", "b", "timestamp=1970-01-01T00:00:00.030Z", "5")))) == ["10", "20"]
    assert texts(select(source, parse_query(("LATEST", "b", "*", "0")))) == []


# -- the door --------------------------------------------------------------------------------

def sasl_client(port: int, nick: str, password: str, caps: str = CAPS) -> IrcClient:
    client = IrcClient(port)
    plain = base64.b64encode(f"\0{nick}\0{password}".encode()).decode()
    client.send(f"CAP REQ :{caps}", "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain}")
    client.until("903")
    client.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP END")
    client.until("422")
    return client


def batch(client: IrcClient, command: str) -> list:
    client.send(command)
    start = client.until("BATCH")[-1]
    lines = client.until("BATCH")
    assert lines[-1].params == ("-" + start.params[0][1:],)
    return lines[:-1]


def register(server, nick: str, password: str = "sesame seed") -> None:
    client = Client(server.addresses[0])
    client.hello(nick, proto=2)
    assert client.request("register", password=password)["op"] == "ok"
    client.request("quit")


def test_channel_history_topics_and_private_logs_outlive_a_restart(make_server, tmp_path):
    port = free_port()
    store = f"sqlite:{tmp_path / 'history.db'}"
    server = make_server(irc_port=port, irc_name="irc.test", store=store)
    register(server, "alice")
    register(server, "bob")
    alice = sasl_client(port, "alice", "sesame seed", CAPS + " draft/event-playback")
    bob = sasl_client(port, "bob", "sesame seed")
    alice.join("#dev")
    alice.send("PRIVMSG #dev :one", "TOPIC #dev :a topic", "PRIVMSG #dev :two",
               "PRIVMSG bob :psst")
    bob.until("PRIVMSG")
    live = [m for m in alice.sync() if m.command in ("PRIVMSG", "TOPIC")]
    assert [m.command for m in live] == ["PRIVMSG", "TOPIC", "PRIVMSG", "PRIVMSG"]
    server.shutdown()
    server = make_server(irc_port=port, irc_name="irc.test", store=store)
    alice = sasl_client(port, "alice", "sesame seed", CAPS + " draft/event-playback")
    alice.join("#dev")
    replayed = [m for m in batch(alice, "CHATHISTORY LATEST #dev * 10")
                if m.command in ("PRIVMSG", "TOPIC")]
    assert [(m.command, m.params[1], m.tags["msgid"], m.tags["time"]) for m in replayed] == [
        (m.command, m.params[1], m.tags["msgid"], m.tags["time"]) for m in live[:3]]
    bob = sasl_client(port, "bob", "sesame seed")  # without event-playback: no TOPIC
    bob.join("#dev")
    assert [m.command for m in batch(bob, "CHATHISTORY LATEST #dev * 10")] == ["PRIVMSG"] * 2
    private = batch(bob, "CHATHISTORY LATEST ALICE * 10")
    assert [(m.source.split("!")[0], m.params) for m in private] == [("alice", ("bob", "psst"))]
    assert private[0].tags["msgid"] == live[3].tags["msgid"]
    targets = batch(bob, "CHATHISTORY TARGETS timestamp=2020-01-01T00:00:00Z "
                         "timestamp=2262-01-01T00:00:00Z 10")
    assert [m.params[1] for m in targets] == ["#dev", "alice"]


def test_a_guest_has_no_private_history_and_bad_queries_fail(irc_pair):
    guest = irc_pair
    guest.send("CHATHISTORY LATEST #nowhere * 10")
    failed = guest.until("FAIL")[-1]
    assert failed.params[:4] == ("CHATHISTORY", "INVALID_TARGET", "LATEST", "#nowhere")
    guest.send("CHATHISTORY SIDEWAYS #x * 1")
    assert guest.until("FAIL")[-1].params[1] == "INVALID_PARAMS"
    assert batch(guest, "CHATHISTORY LATEST someone * 10") == []


@pytest.fixture
def irc_pair(make_server):
    port = free_port()
    make_server(irc_port=port, irc_name="irc.test")
    guest = IrcClient(port)
    guest.send(f"CAP REQ :{CAPS}", "CAP END")
    guest.register("guest")
    return guest


def test_what_the_review_found_stays_fixed(make_server, tmp_path):
    """A dropped account's private log goes with it; a room made again does not inherit
    its forerunner's events; TAGMSGs do not crowd out messages without event-playback;
    a huge msgid is refused quietly."""
    port = free_port()
    server = make_server(irc_port=port, irc_name="irc.test")
    register(server, "alice")
    register(server, "bob")
    alice = sasl_client(port, "alice", "sesame seed", CAPS + " draft/event-playback")
    bob = sasl_client(port, "bob", "sesame seed")
    bob.send("PRIVMSG alice :the vault code is 1234")
    for _ in range(3):
        bob.send("@+draft/persist TAGMSG alice")
    alice.until("PRIVMSG")
    bob.sync()
    assert [m.command for m in batch(bob, "CHATHISTORY LATEST alice * 1")] == ["PRIVMSG"]
    assert batch(bob, "CHATHISTORY BEFORE alice msgid=~99999999999999999999999 10") == []
    alice.join("#secret")
    alice.send("TOPIC #secret :meeting at 5", "PART #secret")
    alice.until("PART")
    json_alice = Client(server.addresses[0])
    json_alice.hello("alice2", proto=2)
    alice.send("QUIT")
    dropper = Client(server.addresses[0])
    dropper.hello("alice", password="sesame seed")
    assert dropper.request("drop", password="sesame seed")["op"] == "ok"
    dropper.request("quit")
    mallory = IrcClient(port)
    mallory.send(f"CAP REQ :{CAPS} draft/event-playback", "CAP END")
    mallory.register("alice")
    mallory.send("REGISTER * * mallorypw")
    mallory.until("900")
    assert batch(mallory, "CHATHISTORY LATEST bob * 10") == []
    mallory.join("#secret")
    assert batch(mallory, "CHATHISTORY LATEST #secret * 10") == []


def test_sasl_waits_for_the_token(make_server):
    port = free_port()
    server = make_server(irc_port=port, irc_name="irc.test", token="letmein")
    client = Client(server.addresses[0])
    client.hello("alice", proto=2, token="letmein")
    assert client.request("register", password="sesame seed")["op"] == "ok"
    plain = base64.b64encode(b"\0alice\0sesame seed").decode()
    stranger = IrcClient(port)
    stranger.send("CAP REQ sasl", "AUTHENTICATE PLAIN")
    assert "token" in stranger.until("904")[-1].params[1]
    insider = IrcClient(port)
    insider.send("PASS letmein", "CAP REQ sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain}")
    insider.until("903")
