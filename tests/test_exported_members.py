"""The public API is what `__all__` says, and importing it never monkey-patches."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gchat.client
import gchat.core
import gchat.irc
import gchat.protocol
import gchat.server


@pytest.mark.parametrize("module", [gchat.core, gchat.server, gchat.protocol, gchat.client, gchat.irc])
def test_all_names_exist_and_have_docstrings(module):
    for name in module.__all__:
        member = getattr(module, name)
        if callable(member):
            assert member.__doc__, f"{module.__name__}.{name} has no docstring"


def test_importing_the_library_does_not_monkey_patch():
    code = ("import gchat.core, gchat.server, gchat.protocol, gchat.client, gchat.irc,"
            " gchat.bench.runner,"
            " gevent.monkey, socket;"
            "assert not gevent.monkey.is_module_patched('socket');"
            "assert socket.socket.__module__ == 'socket'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
