"""The web door on a cluster: a WebSocket user on one node and a TCP user on another
share a room; each node serves /healthz and /metrics of its own."""

from __future__ import annotations

from tests.cluster.conftest import free_port
from tests.server.test_websocket import http_get, metrics
from tests.wsclient import WsClient


def test_a_websocket_user_and_a_tcp_user_on_two_nodes(spawn_node):
    port = free_port()
    first, second = spawn_node("--http-port", str(port)), spawn_node()
    web = WsClient(("127.0.0.1", port))
    web.hello("webby")
    web.join("#both")
    tcp = second.client("tcpy")
    tcp.join("#both")
    web.request("say", room="#both", text="from a browser's door")
    assert tcp.recv_until(lambda f: f["op"] == "msg")[-1]["text"] == "from a browser's door"
    tcp.request("say", room="#both", text="from node two")
    assert web.recv_until(lambda f: f["op"] == "msg" and f["from"] == "tcpy")[-1]["seq"] == 2
    answer = http_get(("127.0.0.1", port), b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    figures = metrics(("127.0.0.1", port))
    assert figures["gchat_connections{transport=ws}"] == 1
    assert figures["gchat_says_total"] == 1  # this node's say
    assert figures["gchat_backplane_round_trip_seconds_count"] >= 1
    assert figures["gchat_deliveries_total"] == 2  # each message to this node's one member
    assert first.proc.poll() is None
