"""PROTOCOL.md on a cluster node: every test of tests/server/test_ops.py (each op, each
error code, the precedence of errors) runs again against a `--backplane` node
subprocess, with the same settings, instead of an in-process single server."""

from __future__ import annotations

import pytest

from tests.server import test_ops

# The same test functions, collected here, where `make_server` and `server` below
# replace the in-process server of tests/conftest.py.
globals().update({name: test for name, test in vars(test_ops).items() if name.startswith("test_")})


class Node:
    """What test_ops needs of a server: where it listens."""

    def __init__(self, process) -> None:
        self.addresses = [("127.0.0.1", process.port)]


@pytest.fixture
def make_server(spawn_node):
    def make(**overrides) -> Node:
        flags = ["--rate", "50", "--burst", "100"]  # the defaults, which spawn_node raises
        for name, value in overrides.items():
            flags += [f"--{name.replace('_', '-')}", str(value)]
        return Node(spawn_node(*flags))

    return make


@pytest.fixture
def server(make_server) -> Node:
    return make_server()


def test_these_tests_talk_to_a_cluster_node(connect):
    assert connect().request("hello", nick="probe")["session"] > 10**9  # node * 10**9 + n
