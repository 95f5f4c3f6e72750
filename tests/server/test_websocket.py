"""The web door (gchat/server/web.py) without a browser: PROTOCOL.md over a WebSocket
with every rule of the TCP door, the WebSocket protocol's corners (fragments, control
frames, close, oversize, binary), bad handshakes, the Origin policy, the HTTP
endpoints' bounds, /healthz and /metrics."""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong

from gchat.server import web
from tests.rawclient import Closed
from tests.wsclient import WsClient, WsRefused


@pytest.fixture
def webserver(make_server, tmp_path):
    """A server with its HTTP port on a free port (the store in tmp_path)."""
    def make(**overrides):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = make_server(http_port=port, **overrides)
        server.http_address = ("127.0.0.1", port)
        return server
    return make


def ws_user(server, nick: str, **kwargs) -> WsClient:
    client = WsClient(server.http_address, **kwargs)
    client.hello(nick)
    return client


def http_get(address, request: bytes, timeout: float = 5) -> bytes:
    """Send raw request bytes; everything the server answers until it closes."""
    with gsocket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        with gevent.Timeout(timeout, AssertionError("the server did not close")):
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass  # it closed with our request unread: what came before stands
    return data


def metrics(address) -> dict[str, float]:
    """GET /metrics, parsed by prometheus_client's own parser: sample name and labels -> value."""
    raw = http_get(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain; version=0.0.4" in head
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def test_websocket_and_tcp_users_share_a_room_and_whisper(webserver, connect):
    server = webserver()
    alice = ws_user(server, "alice")
    bob = connect("bob", server)
    alice.join("#web")
    bob.join("#web")
    assert alice.recv_until(lambda f: f["op"] == "presence")[-1]["nick"] == "bob"
    alice.send({"op": "say", "room": "#web", "text": "from the web", "id": 1})
    assert alice.recv()["text"] == "from the web"  # the msg before the ok, as on TCP
    assert alice.recv() == {"op": "ok", "id": 1, "room": "#web", "seq": 1}
    assert bob.recv_until(lambda f: f["op"] == "msg")[-1]["text"] == "from the web"
    bob.request("say", room="#web", text="from tcp")
    assert alice.recv_until(lambda f: f["op"] == "msg")[-1]["from"] == "bob"
    bob.request("whisper", to="ALICE", text="psst")
    assert alice.recv_until(lambda f: f["op"] == "whisper")[-1]["text"] == "psst"
    alice.request("whisper", to="bob", text="back")
    assert bob.recv_until(lambda f: f["op"] == "whisper")[-1]["text"] == "back"
    assert alice.request("frobnicate")["code"] == "unknown_op"
    alice.send_raw(alice.ws.send(Message(data="{not json")))
    assert alice.recv()["code"] == "bad_frame"


def test_fragments_with_a_ping_between_are_one_request(webserver):
    server = webserver()
    alice = ws_user(server, "alice")
    alice.send_raw(alice.ws.send(Message(data='{"op":"join",', message_finished=False))
                   + alice.ws.send(Ping(b"mid"))
                   + alice.ws.send(Message(data='"room":"#f",', message_finished=False))
                   + alice.ws.send(Message(data='"id":7}', message_finished=True)))
    assert alice.reply_to(7)["members"] == ["alice"]
    assert any(isinstance(e, Pong) and e.payload == b"mid" for e in alice.control)
    alice.send_raw(alice.ws.send(Message(data="   ")))  # blank: ignored, like an empty line
    alice.expect_nothing()


def test_the_close_handshake_ends_the_session_with_a_quit(webserver, connect):
    server = webserver()
    alice = ws_user(server, "alice")
    alice.join("#c")
    bob = connect("bob", server)
    bob.join("#c")
    alice.send_event(CloseConnection(code=1000, reason="bye"))
    alice.read_until_closed()
    assert alice.close_code == 1000  # the server answered the close
    quit_ = bob.recv_until(lambda f: f["op"] == "presence" and f["event"] == "quit")[-1]
    assert quit_["nick"] == "alice"
    assert bob.request("hello", nick="x")["code"] == "already_registered"
    assert connect("alice", server).request("nick", nick="alice")["op"] == "ok"  # nick freed


def test_a_message_over_max_frame_is_refused_and_closed_with_1009(webserver):
    server = webserver(max_frame=1024)
    alice = ws_user(server, "alice")
    fits = '{"op":"ping","id":"' + "x" * (1023 - 21) + '"}'  # 1023 bytes: with a LF, 1024
    assert len(fits) == 1023
    alice.send_raw(alice.ws.send(Message(data=fits)))
    assert alice.recv()["code"] == "bad_args"  # too long an id: but it was read
    alice.send_raw(alice.ws.send(Message(data="x" * 600, message_finished=False)))
    alice.send_raw(alice.ws.send(Message(data="x" * 600, message_finished=True)))
    frames = alice.read_until_closed()
    assert [f.get("code") or f.get("reason") for f in frames] == ["frame_too_large",
                                                                   "frame_too_large"]
    assert alice.close_code == 1009


def test_a_huge_frame_is_cut_off_before_it_arrives(webserver):
    server = webserver(max_frame=4096)
    alice = ws_user(server, "alice")
    # A text frame announcing 1 GiB (masked, as clients must): the server stops at 4 KiB.
    header = bytes((0x81, 0x80 | 127)) + (1 << 30).to_bytes(8, "big") + b"\x00\x00\x00\x00"
    alice.send_raw(header + b"a" * 8192)
    frames = alice.read_until_closed()
    assert frames[-1] == {"op": "bye", "reason": "frame_too_large"}


def test_a_binary_message_is_closed_with_1003(webserver):
    server = webserver()
    alice = ws_user(server, "alice")
    alice.send_event(BytesMessage(data=b'{"op":"ping"}'))
    alice.read_until_closed()
    assert alice.close_code == 1003


def test_a_broken_frame_is_closed_with_a_protocol_error(webserver):
    server = webserver()
    alice = ws_user(server, "alice")
    alice.send_raw(bytes((0x81, 0x05)) + b"hello")  # unmasked: clients must mask
    alice.read_until_closed()
    assert alice.close_code == 1002


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", b"400"),  # no key
    (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"426"),
    (b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),  # not an upgrade
    (b"POST /ws HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"405"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /ws HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", b"413"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", b"413"),  # announced, never sent
    (b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"400"),
    (b"HEAD /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"405"),
])
def test_bad_requests_get_their_status_and_a_close(webserver, request_bytes, status, caplog):
    server = webserver()
    answer = http_get(server.http_address, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


def test_a_foreign_origin_is_refused_and_a_listed_one_let_in(webserver):
    server = webserver(http_origins="https://chat.example.org")
    with pytest.raises(WsRefused) as refused:
        WsClient(server.http_address, origin="https://evil.example")
    assert refused.value.status == 403
    # DNS rebinding: a site pointed its own name at this address, so its page and the
    # Host header agree; a name must be listed to count as the page's own origin.
    rebinding = b"".join([
        b"GET /ws HTTP/1.1\r\nHost: evil.example:%d\r\nOrigin: http://evil.example:%d\r\n"
        % (server.http_address[1], server.http_address[1]),
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"])
    assert http_get(server.http_address, rebinding).startswith(b"HTTP/1.1 403")
    ws_user(server, "listed", origin="https://chat.example.org/")
    ws_user(server, "own")  # the page's own origin
    ws_user(server, "nobrowser", origin=None)  # no Origin: not a browser, no CSWSH


def test_a_slow_request_head_is_cut_off(webserver, monkeypatch):
    monkeypatch.setattr(web, "HEAD_TIMEOUT", 0.3)
    server = webserver()
    answer = http_get(server.http_address, b"GET / HTTP/1.1\r\nHost: h\r\n")  # never ends
    assert answer.startswith(b"HTTP/1.1 408")


def test_the_page_its_files_and_keep_alive(webserver):
    server = webserver()
    answer = http_get(server.http_address, b"GET /nothing-here HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404") and b"HTTP/1.1 200 OK" in answer  # two answers
    if server.web_files.get("/") is not None:
        page = http_get(server.http_address, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 200") and b"text/html" in page
        assert b"Content-Security-Policy: default-src 'self'" in page


def test_healthz_says_503_once_the_store_is_gone(webserver, connect, tmp_path):
    server = webserver(store=f"sqlite:{tmp_path / 'h.db'}")
    request = b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    assert http_get(server.http_address, request).startswith(b"HTTP/1.1 200")
    os.unlink(tmp_path / "h.db")
    alice = connect("alice", server)
    alice.join("#x")
    assert alice.request("say", room="#x", text="lost?")["code"] == "unavailable"
    answer = http_get(server.http_address, request)
    assert answer.startswith(b"HTTP/1.1 503") and b"restart the server" in answer


def test_metrics_move_with_the_traffic(webserver, connect):
    server = webserver()
    before = metrics(server.http_address)
    alice = ws_user(server, "alice")
    bob = connect("bob", server)
    for client in (alice, bob):
        client.join("#m")
    alice.request("say", room="#m", text="one")
    bob.request("whisper", to="alice", text="two")
    assert bob.request("leave", room="#nowhere")["code"] == "not_in_room"
    after = metrics(server.http_address)
    assert after["gchat_says_total"] == before["gchat_says_total"] + 1
    assert after["gchat_deliveries_total"] == before["gchat_deliveries_total"] + 2
    assert after["gchat_whispers_total"] == before["gchat_whispers_total"] + 1
    assert after["gchat_connections{transport=ws}"] == 1
    assert after["gchat_connections{transport=json}"] == 1
    assert after["gchat_registered_sessions"] == 2
    assert after["gchat_rooms"] == 1
    assert after["gchat_store_commit_seconds_count"] >= 1
    assert after["gchat_batch_size_count"] >= 1
    assert after["gchat_errors_total{code=not_in_room}"] == \
        before.get("gchat_errors_total{code=not_in_room}", 0) + 1


def test_a_websocket_member_that_never_reads_is_dropped_and_the_others_go_on(webserver, connect):
    server = webserver(max_queue_bytes=64 * 1024, max_queue_frames=1000, rate=1e6, burst=10**6)
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no megabytes in the kernel
    sock.settimeout(5)
    sock.connect(server.http_address)
    lazy = WsClient(server.http_address, sock=sock)
    lazy.hello("lazy")
    lazy.join("#flood")
    alice, bob = connect("alice", server), connect("bob", server)
    alice.join("#flood")
    bob.join("#flood")
    text, sent = "x" * 4000, 0
    while "lazy" in server.nicks and sent < 5000:
        # batches well under the bound: members that read keep up
        alice.send(*({"op": "say", "room": "#flood", "text": text} for _ in range(10)))
        sent += 10
        for client in (alice, bob):
            client.recv_until(lambda f, s=sent: f.get("op") == "msg" and f["seq"] == s)
    assert "lazy" not in server.nicks, "the WebSocket member that never reads was never dropped"
    assert bob.recv_until(lambda f: f["op"] == "presence")[-1] == {
        "op": "presence", "room": "#flood", "nick": "lazy", "event": "quit"}
    assert alice.request("say", room="#flood", text="still here")["seq"] == sent + 1
    assert metrics(server.http_address)["gchat_slow_consumer_drops_total"] == 1


def test_shutdown_says_bye_and_closes_with_1001(make_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server(http_port=port)
    alice = WsClient(("127.0.0.1", port))
    alice.hello("alice")
    gevent.spawn(server.shutdown)
    frames = alice.read_until_closed()
    assert frames[-1] == {"op": "bye", "reason": "shutdown"} and alice.close_code == 1001
    with pytest.raises(Closed):
        alice.recv(timeout=1)


def test_the_idle_ping_comes_as_a_text_message(webserver):
    server = webserver(idle_timeout=0.6)
    alice = ws_user(server, "alice")
    assert alice.recv(timeout=3) == {"op": "ping"}
    alice.send({"op": "pong"})
    assert not alice.closed


def test_a_client_past_max_connections_gets_503(webserver):
    server = webserver(max_connections=1)
    held = WsClient(server.http_address)
    answer = http_get(server.http_address, b"")  # it asks nothing: the refusal comes first
    assert answer.startswith(b"HTTP/1.1 503")
    held.close()


def test_metrics_show_no_created_series_and_every_documented_name(webserver):
    server = webserver()
    names = {name.split("{")[0] for name in metrics(server.http_address)}
    for name in ("gchat_says_total", "gchat_deliveries_total", "gchat_whispers_total",
                 "gchat_slow_consumer_drops_total", "gchat_store_commit_seconds_bucket",
                 "gchat_batch_size_bucket", "gchat_connections", "gchat_registered_sessions",
                 "gchat_rooms", "gchat_queued_bytes"):
        assert name in names, name
    assert not any(name.endswith("_created") for name in names)


def test_an_http_client_that_never_upgrades_is_not_a_chat_session(webserver, monkeypatch):
    monkeypatch.setattr(web, "HEAD_TIMEOUT", 0.5)
    server = webserver()
    # JSON on the HTTP port is no request head: it times out, and nobody registered.
    answer = http_get(server.http_address, b'{"op":"hello","nick":"sneaky"}\n')
    assert answer.startswith(b"HTTP/1.1 408") and server.find("sneaky") is None


def test_http_requests_take_tokens_of_the_rate_limit(webserver):
    server = webserver(rate=1, burst=3)
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n" * 10
    answer = http_get(server.http_address, pipelined)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", answer)
    assert statuses == [b"200", b"200", b"200", b"429"]  # then closed


def test_https_serves_the_endpoints_and_a_websocket_over_tls(make_server, certificate):
    cert, key = certificate
    server = make_server(https_port=0, tls_cert=str(cert), tls_key=str(key))
    address = server.https_listener.address
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(cert))

    def tls_socket():
        raw = gsocket.create_connection(address, timeout=5)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    with tls_socket() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    secure = WsClient(address, sock=tls_socket(), origin=f"https://{address[0]}:{address[1]}")
    secure.hello("secure")
    assert secure.join("#tls")["members"] == ["secure"]


def test_pings_from_a_client_that_never_reads_cannot_grow_its_queue(webserver):
    server = webserver(max_queue_bytes=256 * 1024)
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(server.http_address)
    pinger = WsClient(server.http_address, sock=sock)
    ping = pinger.ws.send(Ping(b"p" * 125))
    for _ in range(150):  # 150,000 pings: 19 MB of pongs if each were answered, far past
        # what the kernel's buffers hold
        try:
            pinger.send_raw(ping * 1000)
        except OSError:
            break  # it was dropped, or stopped being read: either is a bound
    gevent.sleep(0.2)
    queued = max((s.queued_bytes for s in server.sessions()), default=0)
    assert queued < 256 * 1024, queued  # pongs take tokens and count against the bound


def test_pipelined_requests_from_a_client_that_never_reads_stop_being_read(webserver):
    server = webserver(max_queue_bytes=256 * 1024, rate=1e6, burst=10**6)
    body = server.web_files.get("/app.js") or server.web_files.get("/")
    assert body is not None
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(2)
    sock.connect(server.http_address)
    request = b"GET /app.js HTTP/1.1\r\nHost: h\r\n\r\n"
    try:
        sock.sendall(request * 200)  # megabytes of answers asked for, none read
    except OSError:
        pass
    gevent.sleep(0.3)
    queued = max((s.queued_bytes for s in server.sessions()), default=0)
    assert queued <= 128 * 1024 + len(body[1]) + 1024, queued  # half the bound, plus one answer
    sock.close()


def test_empty_fragments_count_against_max_frame(webserver):
    server = webserver(max_frame=1024)
    alice = ws_user(server, "alice")
    alice.send_raw(alice.ws.send(Message(data="{", message_finished=False)))
    empty = alice.ws.send(Message(data="", message_finished=False))
    alice.send_raw(empty * 2000)  # no bytes, but frames without end
    frames = alice.read_until_closed()
    assert frames[-1] == {"op": "bye", "reason": "frame_too_large"} and alice.close_code == 1009


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.binary(max_size=300), after=st.lists(st.binary(max_size=200), max_size=4),
       upgrade=st.booleans())
def test_any_bytes_on_the_http_port_get_an_answer_or_a_close_never_a_crash(
        webserver_for_fuzz, caplog, before, after, upgrade):
    server = webserver_for_fuzz
    caplog.clear()
    sock = gsocket.create_connection(server.http_address, timeout=2)
    try:
        if upgrade:  # a real handshake first, then the bytes as WebSocket input
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        sock.sendall(before)
        for chunk in after:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # the end: once it has read it all, the server closes
        with gevent.Timeout(3, AssertionError("the server did not close after the input")):
            while sock.recv(65536):
                pass
    except OSError:
        pass  # closed on us: an answer too
    finally:
        sock.close()
    # The server still serves, and nothing it could not handle reached the log.
    answer = http_get(server.http_address, b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.fixture
def webserver_for_fuzz(webserver):
    return webserver(idle_timeout=0)
