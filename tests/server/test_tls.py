"""TLS: a separate port, the same framing inside (PROTOCOL.md 1)."""

from __future__ import annotations

import ssl

from gevent import socket as gsocket
from gevent import ssl as gssl

from tests.rawclient import Client


def test_tls_port_speaks_the_same_protocol(make_server, certificate):
    cert, key = certificate
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    plain_address, tls_address = server.addresses
    assert plain_address != tls_address
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(cert))
    raw = gsocket.create_connection(tls_address, timeout=5)
    secure = Client(tls_address, sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))
    plain = Client(plain_address)
    try:
        # one id sequence across both ports
        assert secure.hello("alice")["session"] != plain.hello("bob")["session"]
        secure.join("lobby")
        plain.join("lobby")
        assert secure.recv()["nick"] == "bob"
        plain.request("say", room="lobby", text="over tls?")
        assert secure.recv()["text"] == "over tls?"
    finally:
        secure.close()
        plain.close()


def test_plain_bytes_on_the_tls_port_do_not_hurt_the_server(make_server, certificate, connect):
    cert, key = certificate
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    confused = gsocket.create_connection(server.addresses[1], timeout=5)
    confused.sendall(b'{"op":"hello","nick":"x"}\n')
    try:  # the handshake fails; the connection closes
        assert confused.recv(100) == b""
    except ConnectionResetError:
        pass
    confused.close()
    assert connect("bob", target=server).request("ping")["op"] == "ok"
