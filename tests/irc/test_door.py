"""The IRC door: IRC and JSON users in the same rooms, over real loopback sockets."""

from __future__ import annotations

import socket
import ssl

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl

from gchat.irc.codec import Message, parse, render
from tests.rawclient import Client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class IrcClient:
    """A raw IRC client: lines out, parsed messages in; every read has a timeout."""

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        self.sock = sock or gsocket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as irctest does
        self.buffer = b""
        self.seen: list[Message] = []

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(text.encode() + b"\r\n" for text in lines))

    def recv(self, timeout: float = 5) -> Message:
        with gevent.Timeout(timeout, AssertionError(f"no line within {timeout} s")):
            while b"\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("closed by the server")
                self.buffer += data
        raw, self.buffer = self.buffer.split(b"\n", 1)
        message = parse(raw.rstrip(b"\r"))
        assert isinstance(message, Message), raw
        self.seen.append(message)
        return message

    def until(self, command: str, timeout: float = 5) -> list[Message]:
        """Messages up to and including the first with `command`."""
        got = []
        while True:
            message = self.recv(timeout)
            got.append(message)
            if message.command == command:
                return got

    def sync(self) -> list[Message]:
        """Everything before the PONG of a fresh PING."""
        self.send("PING sync")
        return self.until("PONG")[:-1]

    def join(self, *channels: str) -> list[Message]:
        """JOIN the channels; everything up to the end of the last one's NAMES."""
        self.send(f"JOIN {','.join(channels)}")
        got: list[Message] = []
        for _ in channels:
            got += self.until("366")
        return got

    def register(self, nick: str) -> list[Message]:
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        return self.until("422")


@pytest.fixture
def irc(make_server, connect):
    port = free_port()
    server = make_server(irc_port=port, irc_name="irc.test")
    clients: list[IrcClient] = []

    def open_irc(nick: str | None = None) -> IrcClient:
        client = IrcClient(port)
        clients.append(client)
        if nick:
            client.register(nick)
        return client

    def open_json(nick: str) -> Client:
        return connect(nick, server)

    yield open_irc, open_json
    for client in clients:
        client.sock.close()


def test_registration_welcomes_with_the_numerics_clients_need(irc):
    open_irc, _ = irc
    bob = open_irc()
    bob.send("CAP LS 302", "NICK bob", "USER bob 0 * :Bob")
    assert bob.recv() == Message("CAP", ("*", "LS", "account-notify account-tag batch "
                                         "draft/account-registration draft/chathistory "
                                         "draft/event-playback echo-message extended-join "
                                         "labeled-response message-tags multi-prefix "
                                         "sasl=PLAIN server-time userhost-in-names"),
                                 source="irc.test")
    bob.send("CAP END")
    got = bob.until("422")
    assert [m.command for m in got] == ["001", "002", "003", "004", "005", "005", "422"]
    assert got[0].params[0] == "bob" and got[3].params[1] == "irc.test"
    isupport = got[4].params + got[5].params
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#&", "UTF8ONLY", "LINELEN=512",
                  "CHATHISTORY=100", "MSGREFTYPES=msgid,timestamp"):
        assert token in isupport
    bob.send("PRIVMSG")
    assert bob.recv().command == "411"
    bob.send("FROB")
    assert bob.recv().params[1:] == ("FROB", "Unknown command")


def test_before_registration_only_registration_commands(irc):
    open_irc, _ = irc
    early = open_irc()
    early.send("JOIN #x")
    assert early.recv().command == "451"
    early.send("NICK 1bad")
    assert early.recv().command == "432"


def test_irc_and_json_users_share_rooms_messages_and_presence(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#dev")
    alice.join("lobby")
    bob = open_irc("bob")
    joined = bob.join("#dev", "&lobby")
    assert [m.command for m in joined if m.command in ("JOIN", "366")] == ["JOIN", "366"] * 2
    names = [m for m in joined if m.command == "353"]
    assert names[0].params[-1].split() == ["@alice", "bob"]
    assert alice.recv_until(lambda f: f.get("op") == "presence")[-1]["nick"] == "bob"

    alice.request("say", room="#dev", text="hello bob")
    said = bob.until("PRIVMSG")[-1]
    assert said == Message("PRIVMSG", ("#dev", "hello bob"), source="alice!alice@irc.test")

    bob.send("PRIVMSG &lobby :hi alice")
    assert bob.sync() == []  # no echo of its own message (no echo-message)
    msg = alice.recv_until(lambda f: f.get("op") == "msg" and f["from"] == "bob")[-1]
    assert (msg["room"], msg["from"], msg["text"]) == ("lobby", "bob", "hi alice")

    bob.send("PART #dev")
    assert bob.until("PART")[-1].params == ("#dev",)
    event = alice.recv_until(lambda f: f.get("op") == "presence")[-1]
    assert (event["room"], event["nick"], event["event"]) == ("#dev", "bob", "leave")


def test_whispers_both_ways_and_nicks_unique_across_doors(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    bob = open_irc("bob")
    assert alice.request("whisper", to="bob", text="psst")["op"] == "ok"
    assert bob.until("PRIVMSG")[-1] == Message("PRIVMSG", ("bob", "psst"),
                                               source="alice!alice@irc.test")
    bob.send("PRIVMSG alice :back at you")
    whisper = alice.recv_until(lambda f: f.get("op") == "whisper")[-1]
    assert (whisper["from"], whisper["text"]) == ("bob", "back at you")
    bob.send("PRIVMSG nobody :hello?")
    assert bob.recv().command == "401"
    carol = open_irc()
    carol.send("NICK ALICE", "USER c 0 * :c")
    assert carol.recv().params[1:] == ("ALICE", "Nickname is already in use")
    assert alice.request("hello", nick="x")["code"] == "already_registered"
    assert open_json("dave").request("nick", nick="Bob")["code"] == "nick_taken"


def test_nick_changes_and_quits_are_told_once_per_user(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    bob = open_irc("bob")
    for room in ("a", "b"):
        alice.join(room)
        bob.join(f"&{room}")
    alice.request("nick", nick="alice2")
    assert bob.sync() == [Message("NICK", ("alice2",), source="alice!alice@irc.test")]
    bob.send("NICK robert")
    assert bob.until("NICK")[-1] == Message("NICK", ("robert",), source="bob!bob@irc.test")
    renames = [f for f in alice.drain() if f.get("event") == "rename"]
    assert [(f["room"], f["old"], f["nick"]) for f in renames] == [("a", "bob", "robert"),
                                                                   ("b", "bob", "robert")]
    alice.request("quit")
    assert bob.sync() == [Message("QUIT", ("Quit",), source="alice2!alice2@irc.test")]


def test_channel_names_fold_case_for_irc_users(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#Dev")
    bob, carol = open_irc("bob"), open_irc("carol")
    bob.send("JOIN #dev")
    assert bob.until("366")[0].params == ("#Dev",)  # the existing room, as it is called
    carol.send("JOIN #DEV")
    names = carol.until("366")
    assert next(m for m in names if m.command == "353").params[-1].split() == \
        ["@alice", "bob", "carol"]
    assert bob.sync() == [Message("JOIN", ("#Dev",), source="carol!carol@irc.test")]
    bob.send("JOIN #new", "JOIN #NEW")  # no room yet: the first one names it
    assert bob.until("366")[0].params == ("#new",)
    assert bob.sync() == []


def test_a_long_or_multiline_text_becomes_several_lines_within_512_bytes(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#t")
    bob = open_irc("bob")
    bob.join("#t")
    text = "é" * 3000
    alice.request("say", room="#t", text="first\nsecond")
    alice.request("say", room="#t", text=text)
    lines = [m for m in bob.sync() if m.command == "PRIVMSG"]
    assert [m.params[1] for m in lines[:2]] == ["first", "second"]
    assert "".join(m.params[1] for m in lines[2:]) == text
    for message in lines:
        raw = f":{message.source} PRIVMSG #t :{message.params[1]}\r\n".encode()
        assert len(raw) <= 512


def test_a_message_sent_before_a_ping_arrives_before_its_pong(irc):
    open_irc, _ = irc
    bob, carol = open_irc("bob"), open_irc("carol")
    for client in (bob, carol):
        client.join("#sync")
    for n in range(20):
        bob.send(f"PRIVMSG #sync :m{n}")
        got = carol.sync()
        assert [m.params[1] for m in got if m.command == "PRIVMSG"] == [f"m{n}"], got


def test_part_and_quit_reasons_reach_irc_users_and_notices_stay_notices(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#r")
    bob, carol = open_irc("bob"), open_irc("carol")
    for client in (bob, carol):
        client.join("#r")
    bob.sync()
    carol.send("NOTICE #r :a notice")
    assert bob.until("NOTICE")[-1].params == ("#r", "a notice")
    msg = alice.recv_until(lambda f: f.get("op") == "msg")[-1]
    assert (msg["text"], msg.get("notice")) == ("a notice", True)  # an extension field
    carol.send("PART #r :see you")
    assert carol.until("PART")[-1].params == ("#r", "see you")
    assert bob.until("PART")[-1].params == ("#r", "see you")
    leave = alice.recv_until(lambda f: f.get("event") == "leave")[-1]
    assert "reason" not in leave  # PROTOCOL.md's presence has none
    bob.join("#s")
    carol.join("#s")
    carol.send("QUIT :gone fishing")
    assert bob.until("QUIT")[-1].params == ("Quit: gone fishing",)


def test_ircv3_echo_time_msgid_tags_and_labels(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#v3")
    bob, carol, dave = open_irc(), open_irc(), open_irc("dave")  # dave asks for nothing
    for client, nick in ((bob, "bob"), (carol, "carol")):
        client.send("CAP LS 302", "CAP REQ :echo-message server-time message-tags batch "
                    "labeled-response", f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP END")
        client.until("422")
    for client in (bob, carol, dave):
        client.join("#v3")
        client.sync()
    bob.send("@label=L1;+draft/react=yes PRIVMSG #v3 :tagged")
    echo = bob.until("PRIVMSG")[-1]  # echo-message: its own message, labeled
    assert echo.tags["label"] == "L1" and echo.tags["+draft/react"] == "yes"
    got = carol.until("PRIVMSG")[-1]
    assert got.params == ("#v3", "tagged") and "label" not in got.tags
    assert got.tags["msgid"] == echo.tags["msgid"] == "#v3:1"
    assert got.tags["time"].endswith("Z") and got.tags["+draft/react"] == "yes"
    assert dave.until("PRIVMSG")[-1].tags == {}  # no capability: no tags
    assert alice.recv_until(lambda f: f.get("op") == "msg")[-1]["text"] == "tagged"
    bob.send("@+typing=active TAGMSG #v3")
    assert carol.until("TAGMSG")[-1].tags["+typing"] == "active"
    assert [m.command for m in dave.sync()] == []  # no message-tags: no TAGMSG
    assert bob.until("TAGMSG")[-1].tags["+typing"] == "active"  # its echo
    bob.send("@label=L2 PONG x")
    assert bob.recv() == Message("ACK", (), source="irc.test", tags={"label": "L2"})
    bob.send("@label=L3 JOIN #other")
    lines = bob.until("BATCH") + bob.until("BATCH")
    assert lines[0].tags == {"label": "L3"} and lines[0].params[1] == "labeled-response"
    assert [m.command for m in lines[1:]] == ["JOIN", "353", "366", "BATCH"]


def test_irc_over_tls_on_its_own_port(make_server, certificate):
    cert, key = certificate
    server = make_server(irc_tls_port=0, tls_cert=str(cert), tls_key=str(key),
                         irc_name="irc.test")
    port = server.irc_tls_listener.address[1]
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(cert))
    raw = gsocket.create_connection(("127.0.0.1", port), timeout=5)
    client = IrcClient(port, context.wrap_socket(raw, server_hostname="127.0.0.1"))
    assert client.register("secure")[0].params[0] == "secure"
    client.send("JOIN #tls")
    assert client.until("366")[0] == Message("JOIN", ("#tls",), source="secure!secure@irc.test")


def test_list_filters_by_mask_negated_mask_and_member_count(irc):
    open_irc, open_json = irc
    alice = open_json("alice")
    for room in ("#chan1", "#chan2", "plain"):
        alice.join(room)
    bob = open_irc("bob")
    bob.join("#chan2")

    def listed(query: str) -> set[str]:
        bob.send(f"LIST {query}".strip())
        return {m.params[1] for m in bob.until("323") if m.command == "322"}

    assert listed("") == {"#chan1", "#chan2", "&plain"}
    assert listed("*an1") == {"#chan1"}
    assert listed("!#c*") == {"&plain"}
    assert listed(">1") == {"#chan2"}
    assert listed("#CH*,<2") == {"#chan1"}


def test_what_real_clients_send_on_connect_and_their_user_name_in_every_prefix(irc):
    # Found with irssi and weechat (tests/irc/test_real_clients.py).
    open_irc, _ = irc
    zed, watcher = open_irc(), open_irc("watcher")
    zed.send("NICK zed", "USER zuser 0 * :Zed")
    zed.until("422")
    zed.send("MODE zed +i", "MODE zed")
    assert zed.until("MODE")[-1] == Message("MODE", ("zed", "+i"), source="zed!zuser@irc.test")
    assert zed.until("221")[-1].params[1] == "+i"
    for client in (zed, watcher):
        client.join("#q")
    zed.send("MODE #q b")
    assert zed.until("368")[-1].params[1] == "#q"
    watcher.sync()
    zed.send("NICK zed2")
    assert zed.until("NICK")[-1].source == "zed!zuser@irc.test"
    assert watcher.until("NICK")[-1].source == "zed!zuser@irc.test"
    zed.send("QUIT :gone")
    assert watcher.until("QUIT")[-1].source == "zed2!zuser@irc.test"


def test_two_quits_that_look_alike_are_both_told(irc):
    open_irc, open_json = irc
    watcher = open_irc("watcher")
    watcher.join("#a", "#b")
    for _ in range(2):  # the same nick, twice, in two shared rooms, quitting alike
        bob = open_json("bob")
        bob.join("#a")
        bob.join("#b")
        bob.request("quit")
        bob.read_until_closed()
        quits = [m for m in watcher.sync() if m.command == "QUIT"]
        assert quits == [Message("QUIT", ("Quit",), source="bob!bob@irc.test")]


def test_a_nick_change_like_an_earlier_one_is_still_told(irc):
    open_irc, _ = irc
    m, x = open_irc("m"), open_irc("xa")
    for client in (m, x):
        client.join("#a")
    m.sync()
    x.send("NICK xb")
    assert m.until("NICK")[-1].params == ("xb",)
    x.send("PART #a", "NICK xa", "JOIN #a")  # away from m, back to the first name
    x.until("366")
    x.send("NICK xb")  # the very line m saw before
    assert m.until("NICK")[-1].params == ("xb",)


def test_topic_operators_and_kick_across_doors(irc):
    open_irc, open_json = irc
    bob = open_irc("bob")
    assert "@bob" in bob.join("#ops")[-2].params[-1]  # the creator is an operator
    alice = open_json("alice")
    joined = alice.join("#ops")
    assert joined["ops"] == ["bob"]
    bob.sync()
    bob.send("TOPIC #ops :ship it")
    assert bob.recv() == Message("TOPIC", ("#ops", "ship it"), source="bob!bob@irc.test")
    told = alice.recv_until(lambda f: f["op"] == "topic")[-1]
    assert (told["topic"], told["from"]) == ("ship it", "bob")
    carol = open_irc("carol")
    got = carol.join("#ops")
    assert [(m.command, m.params[1:]) for m in got if m.command in ("332", "353")] == [
        ("332", ("#ops", "ship it")), ("353", ("=", "#ops", "alice @bob carol"))]
    assert next(m for m in got if m.command == "333").params[2] == "bob"
    carol.send("TOPIC #ops :mine now")  # +t: only operators
    assert carol.recv().command == "482"
    assert alice.request("topic", room="#ops", text="mine")["code"] == "not_operator"
    bob.sync()
    bob.send("MODE #ops +o alice")
    assert bob.recv() == Message("MODE", ("#ops", "+o", "alice"), source="bob!bob@irc.test")
    assert carol.recv() == bob.seen[-1]
    carol.send("WHO #ops")
    flags = {m.params[5]: m.params[6] for m in carol.until("315") if m.command == "352"}
    assert flags == {"alice": "H@", "bob": "H@", "carol": "H"}
    assert alice.request("kick", room="#ops", nick="carol", reason="enough")["op"] == "ok"
    kick = Message("KICK", ("#ops", "carol", "enough"), source="alice!alice@irc.test")
    assert carol.recv() == kick and bob.recv() == kick
    carol.send("PRIVMSG #ops :hello?")
    assert carol.recv().command == "404"
    bob.send("KICK #ops alice :bye", "MODE #ops -t")
    assert alice.recv_until(lambda f: f["op"] == "kicked")[-1]["by"] == "bob"
    carol.send("JOIN #ops", "TOPIC #ops :anyone may, now")
    assert carol.until("TOPIC")[-1].params == ("#ops", "anyone may, now")
    carol.send("MODE #ops", "KICK #ops bob", "MODE #ops +o carol")
    assert carol.recv().params[1:] == ("#ops", "+n")
    assert [m.command for m in (carol.recv(), carol.recv())] == ["482", "482"]
    bob.sync()
    bob.send("KICK #ops nobody", "MODE #ops +x")
    assert [m.command for m in (bob.recv(), bob.recv())] == ["441", "472"]


def test_names_of_several_channels_ends_once(irc):
    open_irc, _ = irc
    bob = open_irc("bob")
    bob.join("#a", "#b")
    bob.send("NAMES #a,#b")
    assert [(m.command, m.params[1:]) for m in bob.until("366")] == [
        ("353", ("=", "#a", "@bob")), ("353", ("=", "#b", "@bob")),
        ("366", ("#a,#b", "End of /NAMES list"))]


def test_voice_and_moderation_with_multi_prefix(irc):
    open_irc, open_json = irc
    bob = open_irc("bob")
    bob.join("#stage")
    alice = open_json("alice")
    alice.join("#stage")
    carol = open_irc()
    carol.send("CAP REQ :multi-prefix", "NICK carol", "USER carol 0 * :carol", "CAP END")
    carol.until("422")
    carol.join("#stage")
    bob.send("MODE #stage +mv carol", "MODE #stage +v bob")
    bob.sync()
    carol.sync()
    carol.send("NAMES #stage")
    assert carol.until("366")[0].params[-1] == "alice @+bob +carol"
    bob.send("NAMES #stage")
    assert bob.until("366")[0].params[-1] == "alice @bob +carol"  # the highest prefix only
    assert alice.request("say", room="#stage", text="hi")["code"] == "moderated"
    carol.send("PRIVMSG #stage :voiced")
    assert bob.recv() == Message("PRIVMSG", ("#stage", "voiced"), source="carol!carol@irc.test")
    bob.send("MODE #stage -v carol")
    bob.sync()
    carol.sync()
    carol.send("PRIVMSG #stage :still?", "MODE #stage")
    assert carol.recv().params[1:] == ("#stage", "Cannot send to channel (+m)")
    assert carol.recv().params[1:] == ("#stage", "+mnt")


def test_long_topics_and_kick_reasons_still_fit_512_bytes(irc):
    open_irc, open_json = irc
    nick = "J" + "x" * 31  # the longest nick
    channel = "#" + "c" * 64  # the longest room: channel #ccc...
    owner = open_json(nick)
    owner.join(channel)
    bob = open_irc("bob")
    bob.join(channel)
    topic = "é" * 195  # 390 bytes: as long as a topic may be
    assert owner.request("topic", room=channel, text=topic)["op"] == "ok"
    told = bob.until("TOPIC")[-1]
    assert len(render(told)) <= 512 and topic.startswith(told.params[1])
    carol = open_irc("carol")
    shown = next(m for m in carol.join(channel) if m.command == "332")
    assert len(render(shown)) <= 512
    assert owner.request("kick", room=channel, nick="carol", reason="r" * 390)["op"] == "ok"
    kick = carol.until("KICK")[-1]
    assert len(render(kick)) <= 512 and kick.params[:2] == (channel, "carol")


def test_pipelined_says_reach_every_door_in_one_order_with_each_echo_in_place(irc):
    # Says that arrive together are delivered as runs (publish.py): JSON members take
    # a run as one piece, an IRC sender with echo-message gets its echo at its place.
    open_irc, open_json = irc
    alice = open_json("alice")
    alice.join("#run")
    bob, carol = open_irc(), open_irc("carol")
    bob.send("CAP LS 302", "CAP REQ :echo-message message-tags",
             "NICK bob", "USER bob 0 * :bob", "CAP END")
    bob.until("422")
    for client in (bob, carol):
        client.join("#run")
        client.sync()
    alice.send_raw(b"".join(b'{"op":"say","room":"#run","text":"a%d","id":%d}\n' % (n, n)
                            for n in range(5)))
    bob.send(*(f"PRIVMSG #run :b{n}" for n in range(5)))
    carol_order = [m.params[1] for m in carol.until("PRIVMSG") if m.command == "PRIVMSG"]
    while len(carol_order) < 10:
        carol_order += [m.params[1] for m in carol.until("PRIVMSG") if m.command == "PRIVMSG"]
    frames = alice.recv_until(lambda f: f.get("op") == "msg" and f["seq"] == 10)
    assert [f["text"] for f in frames if f["op"] == "msg"] == carol_order
    assert [f["seq"] for f in frames if f["op"] == "msg"] == list(range(1, 11))
    oks = [(i, f["id"]) for i, f in enumerate(frames) if f["op"] == "ok"]
    frames += alice.recv_until(lambda f: f.get("id") == 4) if len(oks) < 5 else []
    oks = [(i, f["id"]) for i, f in enumerate(frames) if f["op"] == "ok"]
    assert [id_ for _, id_ in oks] == list(range(5))  # in request order
    for index, id_ in oks:  # each after its own msg
        assert index > next(i for i, f in enumerate(frames) if f.get("text") == f"a{id_}")
    bob_view: list[str] = []
    while len(bob_view) < 10:
        bob_view += [m.params[1] for m in bob.until("PRIVMSG") if m.command == "PRIVMSG"]
    # Its echoes in place. (Not so with labeled-response: a labeled echo is part of
    # the labeled answer, sent once the say is delivered, so others may come first.)
    assert bob_view == carol_order
