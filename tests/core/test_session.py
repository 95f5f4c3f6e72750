"""Session over socketpair(): hooks, the single writer, the queue bound, closing once."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket as gsocket

from gchat.core import Session, SessionLimits


class Recorder(Session):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.events: list[tuple] = []
        self.lines: list[bytes] = []
        self.sends: list[int] = []
        self.ended = gevent.event.Event()

    def on_connected(self) -> None:
        self.events.append(("connected",))

    def on_recv(self, line: bytes) -> None:
        self.lines.append(line)

    def on_send(self, nbytes: int) -> None:
        self.sends.append(nbytes)

    def on_disconnected(self, reason: str) -> None:
        self.events.append(("disconnected", reason))
        self.ended.set()


@pytest.fixture
def pair():
    ours, theirs = gsocket.socketpair()
    yield ours, theirs
    for sock in (ours, theirs):
        sock.close()


def read_all(sock, timeout: float = 5.0) -> bytes:
    chunks = []
    with gevent.Timeout(timeout, AssertionError("peer did not close")):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_lines_reach_on_recv_in_order_blank_lines_do_not(pair):
    ours, theirs = pair
    session = Recorder()
    session.start(ours)
    before = session.last_activity
    theirs.sendall(b"one\r\n\n  \r\ntw")
    theirs.sendall(b"o\nthree")
    theirs.close()
    assert session.ended.wait(5)
    assert session.lines == [b"one", b"two"]
    assert session.events == [("connected",), ("disconnected", "eof")]
    assert session.last_activity > before


def test_send_never_blocks_and_the_writer_coalesces(pair):
    ours, theirs = pair
    session = Recorder()
    session.start(ours)
    frames = [b"frame %d\n" % i for i in range(100)]
    for frame in frames:
        assert session.send(frame)  # no switch happens here: all queued
    assert session.queued_frames == 100
    session.close("done")
    assert read_all(theirs) == b"".join(frames)
    assert session.sends == [sum(map(len, frames))]  # one sendall for the lot
    assert session.queued_bytes == session.queued_frames == 0


def test_close_flushes_then_farewell_then_eof(pair):
    ours, theirs = pair
    session = Recorder()
    session.start(ours)
    session.send(b"a\n")
    session.close("bye", b"farewell\n")
    assert not session.send(b"too late\n")
    assert read_all(theirs) == b"a\nfarewell\n"
    assert session.wait_closed(1)
    assert session.disconnect_reason == "bye"


def test_disconnect_is_idempotent_and_concurrent(pair):
    ours, _ = pair
    session = Recorder()
    session.start(ours)
    greenlets = [gevent.spawn(session.disconnect, f"r{i}") for i in range(5)]
    session.disconnect("first")
    session.disconnect("second")
    gevent.joinall(greenlets, raise_error=True)
    assert session.events == [("connected",), ("disconnected", "first")]
    assert session.wait_closed(1) and not session.is_open


def test_a_peer_that_never_reads_is_dropped_at_the_queue_bound(pair):
    ours, theirs = pair
    limits = SessionLimits(max_queue_bytes=10_000, max_queue_frames=1000, linger=0.2)
    session = Recorder(limits=limits)
    session.start(ours)
    frame = b"x" * 999 + b"\n"
    accepted = 0
    while session.send(frame):
        accepted += 1
        assert session.queued_bytes <= limits.max_queue_bytes + len(frame)
        if accepted % 10 == 0:
            gevent.sleep(0)  # let the writer fill the socket buffers
    assert session.ended.wait(5)
    assert session.events[-1] == ("disconnected", "slow_consumer")
    assert not session.send(frame)
    assert session.wait_closed(5)
    data = read_all(theirs)
    assert data == frame * (len(data) // len(frame))  # whole frames only
    assert session.queued_bytes == 0


def test_queue_bound_counts_frames_and_accepts_one_large_reply(pair):
    ours, _ = pair
    session = Recorder(limits=SessionLimits(max_queue_bytes=100, max_queue_frames=3))
    session.start(ours)
    assert session.send(b"x" * 10_000)  # the queue held less than the bound before it
    assert not session.send(b"y\n")
    ours2, _theirs2 = gsocket.socketpair()
    counted = Recorder(limits=SessionLimits(max_queue_bytes=10_000, max_queue_frames=3))
    counted.start(ours2)
    assert [counted.send(b"z\n") for _ in range(4)] == [True, True, True, False]
    counted.disconnect()
    ours2.close()
    _theirs2.close()


def test_frame_too_large_disconnects_by_default(pair):
    ours, theirs = pair
    session = Recorder(limits=SessionLimits(max_frame=10))
    session.start(ours)
    theirs.sendall(b"ok\n" + b"x" * 50)
    assert session.ended.wait(5)
    assert session.lines == [b"ok"]
    assert session.events[-1] == ("disconnected", "frame_too_large")


def test_reset_by_peer(pair):
    ours, theirs = pair
    session = Recorder()
    session.start(ours)
    session.send(b"x" * 100_000)
    theirs.close()
    assert session.ended.wait(5)
    assert session.events[-1][1] in {"eof", "reset", "error"}


def test_a_watched_session_reads_in_order_and_closes_once(pair):
    ours, theirs = pair
    session = Recorder()
    session.watch(ours)  # no greenlet of its own: a read watcher wakes a reader
    theirs.sendall(b"one\ntw")
    theirs.sendall(b"o\n")
    with gevent.Timeout(5, AssertionError("lines did not arrive")):
        while len(session.lines) < 2:
            gevent.sleep(0.01)
    session.send(b"reply\n")
    assert theirs.recv(100) == b"reply\n"
    theirs.sendall(b"three\n")
    theirs.close()
    assert session.ended.wait(5)
    assert session.wait_closed(5)
    assert session.lines == [b"one", b"two", b"three"]
    assert session.events == [("connected",), ("disconnected", "eof")]


def test_a_watched_session_that_is_disconnected_stops_watching(pair):
    ours, theirs = pair
    session = Recorder()
    closed = gevent.event.Event()
    session.when_closed(closed.set)
    session.watch(ours)
    session.disconnect("kick")
    session.disconnect("again")
    assert closed.wait(5)
    assert read_all(theirs) == b""
    assert session.events == [("connected",), ("disconnected", "kick")]


def test_replies_are_outside_the_bound_and_leave_nothing_behind_once_written(pair):
    ours, theirs = pair
    session = Recorder(limits=SessionLimits(max_queue_bytes=1000, max_queue_frames=100))
    session.start(ours)
    reply = b"r" * 3000 + b"\n"  # three times the bound
    assert session.send_reply(reply)
    assert session.send(b"event\n")  # the reply is not counted: the event still fits
    assert session.counted_bytes() <= len(b"event\n")
    for _ in range(10_000):  # many replies, each written as it comes
        session.send_reply(b"ok\n")
        if session.queued_bytes > 256:
            gevent.sleep(0)  # let the Flusher write
    received = b""
    with gevent.Timeout(5, AssertionError("not all written")):
        while len(received) < len(reply) + 6 + 30_000:
            received += theirs.recv(65536)
    # Nothing of 10,001 written replies is kept (a soak found each one kept for ever).
    assert not session._replies
    assert session.queued_bytes == 0 and session.counted_bytes() == 0
    session.disconnect()
