"""Hostile IRC input: every bad line gets its numeric or a clean disconnect, and the
server goes on serving (PROTOCOL.md 6, guarantee 4, on the IRC door)."""

from __future__ import annotations

import gevent

import gchat.server.irc
from tests.irc.test_door import IrcClient, free_port
from tests.rawclient import never_reading


def start(make_server, **settings):
    port = free_port()
    make_server(irc_port=port, irc_name="irc.test", **settings)
    return port


def test_bad_lines_get_their_numerics_and_the_connection_goes_on(make_server):
    port = start(make_server)
    bob = IrcClient(port)
    bob.register("bob")
    bob.sock.sendall(b"PRIVMSG bob :" + b"x" * 600 + b"\r\n")
    assert bob.recv().command == "417"  # ERR_INPUTTOOLONG, the rest of the line dropped
    bob.sock.sendall(b"@" + b"k=" + b"v" * 5000 + b" PING x\r\n")
    assert bob.recv().command == "417"  # a tag section over 4096 bytes
    bob.sock.sendall(b"PRIVMSG bob :caf\xe9\r\n")
    fail = bob.recv()
    assert (fail.command, fail.params[:2]) == ("FAIL", ("PRIVMSG", "INVALID_UTF8"))
    bob.sock.sendall(b"PRIV\x00MSG bob :nul\r\n")  # malformed: ignored
    bob.sock.sendall(b"PING bare-lf\n")
    assert bob.until("PONG")[-1].params == ("irc.test", "bare-lf")
    assert bob.sync() == []


def test_a_thousand_joins_are_refused_past_max_rooms_and_nothing_breaks(make_server):
    port = start(make_server, max_rooms=5, rate=100_000, burst=100_000)
    bob = IrcClient(port)
    bob.register("bob")
    bob.send("JOIN " + ",".join(f"#c{i}" for i in range(40)))  # within 512 bytes
    bob.send(*[f"JOIN #d{i}" for i in range(1000)])
    got = bob.sync()
    assert sum(m.command == "JOIN" for m in got) == 5
    assert sum(m.command == "405" for m in got) == 1035
    bob.send("JOIN bad name", "JOIN #ok,nohash")
    assert [m.command for m in bob.sync() if m.command.isdigit()] == ["479", "405", "479"]


def test_a_flood_is_slowed_then_cut_off_with_excess_flood(make_server, monkeypatch):
    monkeypatch.setattr(gchat.server.irc, "EXCESS_FLOOD", 0.5)
    port = start(make_server, rate=20, burst=5)
    bob, carol = IrcClient(port), IrcClient(port)
    bob.register("bob")
    carol.register("carol")
    bob.send(*[f"PRIVMSG carol :{n}" for n in range(200)])
    with gevent.Timeout(10, AssertionError("never cut off")):
        while (message := bob.recv()).command != "ERROR":
            pass
    assert message.params == ("Closing Link: Excess Flood",)
    texts = [m.params[1] for m in carol.sync() if m.command == "PRIVMSG"]
    assert 5 < len(texts) < 50 and texts == [str(n) for n in range(len(texts))]  # slowed, in order


def test_a_client_that_asks_and_never_reads_stops_being_read(make_server):
    # Replies do not count against the queue bound; the door stops reading instead.
    port = free_port()
    server = make_server(irc_port=port, max_queue_bytes=65536, rate=100_000, burst=100_000)
    hog = IrcClient(port, never_reading(("127.0.0.1", port)).sock)  # a tiny receive buffer
    hog.register("hog")
    hog.sock.sendall(b"WHOIS hog\r\n" * 20_000)  # 3 MB of replies, were all answered
    session = server.nicks["hog"]
    with gevent.Timeout(10, AssertionError("the server never stopped reading the hog")):
        while not session.reads_paused:
            gevent.sleep(0.01)
    assert session.queued_bytes <= 65536 // 2 + 1024  # half the bound, plus one reply
    assert session.is_open  # not dropped: it asked, it has not yet failed to read events


def test_one_line_cannot_fan_out_past_targmax_or_use_bad_words(make_server):
    port = start(make_server)
    bob, carol = IrcClient(port), IrcClient(port)
    bob.register("bob")
    carol.register("carol")
    bob.send("PRIVMSG " + ",".join(["carol"] * 3 + ["a", "b", "c", "d"]) + " :x")
    assert bob.until("407")[-1].command == "407"
    assert carol.sync() == []
    bob.send("PRIVMSG carol,CAROL,carol :once")  # duplicates count once
    assert [m.params[1] for m in carol.sync() if m.command == "PRIVMSG"] == ["once"]
    for raw in ("WHO :a b", "NICK :a b", "TOPIC :#a b", "WHOIS :a b", "JOIN ,#ok", "LIST >\u00b2"):
        bob.send(raw)
    got = bob.sync()
    assert any(m.command == "JOIN" and m.params == ("#ok",) for m in got)
    assert all(" " not in p for m in got if m.command.isdigit() for p in m.params[:-1])
