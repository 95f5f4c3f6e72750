"""TLS: a separate port, the same framing inside (PROTOCOL.md 1)."""

from __future__ import annotations

import ssl

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl

from tests.rawclient import Client


def tls_client(address: tuple[str, int], cert) -> Client:
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(cert))
    raw = gsocket.create_connection(address, timeout=5)
    return Client(address, sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))


def test_tls_port_speaks_the_same_protocol(make_server, certificate):
    cert, key = certificate
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    plain_address, tls_address = server.addresses
    assert plain_address != tls_address
    secure = tls_client(tls_address, cert)
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


def test_past_max_connections_the_tls_port_closes_without_a_word_in_clear(make_server, certificate):
    # It used to send `bye server_full` in clear text: a TLS client saw WRONG_VERSION_NUMBER.
    cert, key = certificate
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key), max_connections=1)
    tls_address = server.addresses[1]
    first = tls_client(tls_address, cert)
    try:
        first.hello("alice")
        with pytest.raises((ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)):
            tls_client(tls_address, cert)  # the handshake meets a closed connection
        # A flood that never starts a handshake holds nothing: each connection is
        # closed at once, with no byte sent and no handshake timeout waited for.
        flood = [gsocket.create_connection(tls_address, timeout=5) for _ in range(20)]
        with gevent.Timeout(3, AssertionError("a refused connection was held open")):
            for sock in flood:
                try:
                    assert sock.recv(100) == b""
                except ConnectionResetError:
                    pass
                sock.close()
        assert first.request("ping")["op"] == "ok"
    finally:
        first.close()
    with gevent.Timeout(5):
        while server.listeners[1].sessions:
            gevent.sleep(0.01)
    assert tls_client(tls_address, cert).hello("bob")["op"] == "ok"  # room again
