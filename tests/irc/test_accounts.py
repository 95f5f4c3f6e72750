"""Accounts on the IRC door: SASL PLAIN, PASS for clients without SASL, REGISTER
(draft/account-registration), and a registered nick reserved for its account."""

from __future__ import annotations

import base64

import pytest

from gchat.irc.codec import Message
from tests.irc.test_door import IrcClient, free_port
from tests.rawclient import Client

PASSWORD = "open sesame"


@pytest.fixture
def irc_server(make_server):
    port = free_port()
    server = make_server(irc_port=port, irc_name="irc.test")
    return server, port


def register_account(server, nick: str, password: str = PASSWORD) -> None:
    client = Client(server.addresses[0])
    client.hello(nick, proto=2)
    assert client.request("register", password=password)["op"] == "ok"
    client.request("quit")


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_sasl_plain_logs_in_before_registration(irc_server):
    server, port = irc_server
    register_account(server, "alice")
    client = IrcClient(port)
    client.send("CAP LS 302")
    offered = client.recv().params[2].split()
    assert "sasl=PLAIN" in offered and "draft/account-registration" in offered
    client.send("CAP REQ sasl", "AUTHENTICATE PLAIN")
    assert client.until("AUTHENTICATE")[-1] == Message("AUTHENTICATE", ("+",), source="irc.test")
    client.send(f"AUTHENTICATE {plain('alice', 'wrong')}")
    assert client.recv().command == "904"
    client.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', PASSWORD)}")
    logged_in = client.until("900")[-1]
    assert logged_in.params == ("*", "*!*@irc.test", "alice", "You are now logged in as alice")
    assert client.recv().command == "903"
    client.send("NICK alice", "USER a 0 * :Alice", "CAP END")
    assert client.until("001")[-1].params[0] == "alice"
    watcher = IrcClient(port)
    watcher.register("watcher")
    watcher.send("WHOIS alice")
    whois = {m.command: m.params for m in watcher.until("318")}
    assert whois["330"] == ("watcher", "alice", "alice", "is logged in as")


def test_a_registered_nick_is_reserved_until_the_client_logs_in(irc_server):
    server, port = irc_server
    register_account(server, "alice")
    client = IrcClient(port)
    client.send("NICK alice", "USER a 0 * :A")
    reserved = client.until("433")[-1]
    assert reserved.params[1] == "alice" and "reserved" in reserved.params[2]
    client.send("NICK guest")
    client.until("001")
    client.send("NICK alice")
    assert client.until("433")[-1].params[1] == "alice"
    client.send("AUTHENTICATE PLAIN")  # sasl was not requested
    assert [m.command for m in client.until("904")] == ["908", "904"]
    client.send("CAP REQ sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', PASSWORD)}")
    assert client.until("903")[-2].params[2] == "alice"  # logged in after registration
    client.send("NICK alice")
    assert client.until("NICK")[-1] == Message("NICK", ("alice",), source="guest!a@irc.test")


@pytest.mark.parametrize("password", [PASSWORD, f"alice:{PASSWORD}"])
def test_pass_logs_in_clients_without_sasl(irc_server, password):
    server, port = irc_server
    register_account(server, "alice")
    client = IrcClient(port)
    client.send(f"PASS :{password}", "NICK alice", "USER a 0 * :A")
    assert client.until("001")[-1].params[0] == "alice"


def test_a_wrong_pass_is_refused_and_closed(irc_server):
    server, port = irc_server
    register_account(server, "alice")
    client = IrcClient(port)
    client.send("PASS wrong", "NICK alice", "USER a 0 * :A")
    refused = client.until("464")[-1]
    assert "wrong account name or password" in refused.params[1]
    assert client.recv().command == "ERROR"
    unregistered = IrcClient(port)  # PASS for a nick with no account: ignored
    unregistered.send("PASS whatever", "NICK bob", "USER b 0 * :B")
    unregistered.until("001")


def test_sasl_edge_cases(irc_server):
    server, port = irc_server
    register_account(server, "alice")
    client = IrcClient(port)
    client.send("CAP REQ sasl")
    client.until("CAP")
    client.send("AUTHENTICATE PLAIN", "AUTHENTICATE *")
    assert [m.command for m in client.until("906")] == ["AUTHENTICATE", "906"]
    client.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + "A" * 401)
    assert client.until("905")[-1].params[0] == "*"
    client.send("AUTHENTICATE PLAIN", "AUTHENTICATE !!!")
    assert client.until("904")
    client.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', PASSWORD, 'bob')}")
    assert client.until("904")  # another authzid
    client.send("AUTHENTICATE SCRAM-SHA-256")
    assert [m.command for m in client.until("904")] == ["908", "904"]
    client.send("AUTHENTICATE PLAIN", "NICK alice", "USER a 0 * :A", "CAP END")
    got = [m.command for m in client.until("433")]
    assert "906" in got  # registering aborts the exchange; the nick stays reserved


def test_register_creates_an_account_for_the_nick(irc_server):
    server, port = irc_server
    client = IrcClient(port)
    client.send("REGISTER * * early")
    failed = client.until("FAIL")[-1]
    assert failed.params[:2] == ("REGISTER", "COMPLETE_CONNECTION_REQUIRED")
    client.register("carol")
    client.send("REGISTER dave * sesame-seed")
    assert client.until("FAIL")[-1].params[1] == "ACCOUNT_NAME_MUST_BE_NICK"
    client.send("REGISTER * * short")
    assert client.until("FAIL")[-1].params[1] == "WEAK_PASSWORD"
    client.send("REGISTER carol * sesame-seed")
    assert client.until("REGISTER")[-1].params[:2] == ("SUCCESS", "carol")
    assert client.until("900")[-1].params[2] == "carol"
    client.send("REGISTER * * sesame-seed")
    assert client.until("FAIL")[-1].params[1] == "ACCOUNT_EXISTS"
    json_client = Client(server.addresses[0])
    assert json_client.request("hello", nick="carol")["code"] == "account_required"


def test_no_accounts_means_no_sasl(make_server):
    port = free_port()
    make_server(irc_port=port, irc_name="irc.test", registration="off")
    client = IrcClient(port)
    client.send("CAP LS 302")
    offered = client.recv().params[2].split()
    assert "sasl=PLAIN" not in offered and "draft/account-registration" not in offered


def test_account_tag_extended_join_and_account_notify(irc_server):
    server, port = irc_server
    register_account(server, "alice")
    watcher = IrcClient(port)
    watcher.send("CAP REQ :account-tag extended-join account-notify", "CAP END")
    watcher.register("watcher")
    watcher.join("#acc")
    alice = IrcClient(port)
    alice.send("CAP REQ :sasl", "NICK alice2", "USER a 0 * :Alice Liddell", "CAP END")
    alice.until("001")
    alice.join("#acc")
    assert watcher.until("JOIN")[-1].params == ("#acc", "*", "Alice Liddell")
    alice.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', PASSWORD)}")
    notice = watcher.until("ACCOUNT")[-1]
    assert (notice.source, notice.params) == ("alice2!a@irc.test", ("alice",))
    alice.send("PRIVMSG #acc :tagged")
    said = watcher.until("PRIVMSG")[-1]
    assert said.tags == {"account": "alice"}
    other = IrcClient(port)
    other.register("other")
    other.join("#acc")
    assert watcher.until("JOIN")[-1].params == ("#acc", "*", "other")
