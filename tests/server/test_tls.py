"""TLS: a separate port, the same framing inside (PROTOCOL.md 1)."""

from __future__ import annotations

import shutil
import ssl

import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent import subprocess

from tests.rawclient import Client


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


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
