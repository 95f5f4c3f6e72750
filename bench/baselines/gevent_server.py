"""Baseline: a gevent server, a greenlet per connection on gevent's StreamServer.

The same protocol subset as the others (common.Chat) and the asyncio baseline's
batching: `queue` only appends to the connection's buffer and marks it dirty; one
callback per turn of the event loop writes each dirty connection's buffer with one
non-blocking send. What the socket does not take goes to a writer greenlet for that
connection (spawned only then, ended once the socket took everything), as asyncio's
transport keeps what it could not write and writes it when the socket is writable.
So a broadcast to 1,000 members costs 1,000 appends, and each member one send per
turn, however many messages it got. No engine, no bounds, no persistence: the
simplest honest server of the greenlet model, to hold against the thread and
callback ones, and against gchat, which is this model with every guarantee on.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Chat, arguments

chat = Chat()
dirty: list[Connection] = []
flush_scheduled = False


def flush() -> None:
    """Runs in the hub once per loop turn: it must never block, so it sends what the
    socket takes at once and leaves the rest to the connection's writer greenlet."""
    global flush_scheduled
    flush_scheduled = False
    connections = dirty[:]
    dirty.clear()
    for connection in connections:
        batch, connection.pending = connection.pending, []
        if connection.writer is not None:  # the writer owns the socket: it sends in order
            connection.backlog.extend(batch)
            continue
        if connection.sock is None:
            continue
        data = b"".join(batch)
        try:
            sent = connection.sock.send(data, 0, timeout=0.0)  # gevent: raise, never wait
        except BlockingIOError:
            sent = 0
        except OSError:
            continue  # the reader sees the connection end
        if sent < len(data):
            connection.backlog.append(data[sent:])
            connection.writer = gevent.spawn(connection.write_backlog)


class Connection:
    def __init__(self, sock: Any) -> None:
        self.sock: Any = sock
        self.nick: str | None = None
        self.rooms: set[str] = set()
        self.pending: list[bytes] = []
        self.backlog: list[bytes] = []  # what the socket did not take, for the writer
        self.writer: gevent.Greenlet | None = None

    def queue(self, data: bytes) -> None:
        global flush_scheduled
        if not self.pending:
            dirty.append(self)
        self.pending.append(data)
        if not flush_scheduled:
            flush_scheduled = True
            gevent.get_hub().loop.run_callback(flush)

    def write_backlog(self) -> None:
        """The writer greenlet: sendall (it waits while the socket is full) until the
        backlog is empty, then ends."""
        try:
            while self.backlog and self.sock is not None:
                batch, self.backlog = self.backlog, []
                self.sock.sendall(b"".join(batch))
        except OSError:
            pass
        finally:
            self.writer = None

    def read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                lines = (buffer + data).split(b"\n")
                buffer = lines.pop()
                for line in lines:
                    if line.strip():
                        chat.handle(self, line)
        except OSError:
            pass
        finally:
            chat.gone(self)
            self.sock = None


def handle(sock: Any, _address: Any) -> None:
    """StreamServer's greenlet for one connection: it reads and answers until the
    peer goes; the server closes the socket when it returns."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Connection(sock).read_loop()


def serve(host: str, port: int) -> None:
    server = StreamServer((host, port), handle, backlog=4096)
    server.start()
    print(f"gevent baseline listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    server.close()


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()  # only the entry point patches (the module itself needs none)

    options = arguments(__doc__.splitlines()[0])
    serve(options.host, options.port)
