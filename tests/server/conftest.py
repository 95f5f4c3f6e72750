"""Fixtures for the server as a subprocess."""

from __future__ import annotations

import pytest

from tests.server.process import ServerProcess


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    """Subprocess servers keep their history in the test's own directory, never in the
    checkout's var/ (the default store)."""
    path = tmp_path / "gchat.db"
    monkeypatch.setenv("GCHAT_STORE", f"sqlite:{path}")
    return path


@pytest.fixture
def spawn_server():
    """Start `python -m gchat.server` processes; SIGKILLed after the test."""
    processes: list[ServerProcess] = []

    def spawn(*args: str, **kwargs) -> ServerProcess:
        process = ServerProcess(*args, **kwargs)
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        process.kill()
