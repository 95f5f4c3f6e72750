"""Baseline: an asyncio server (Protocol callbacks), optionally on uvloop.

`queue` does not write at once: it appends to the connection's buffer and marks the
connection dirty; one callback per loop iteration writes each dirty connection's
buffer with a single transport.write. So a broadcast to 1,000 members costs 1,000
appends, and each member one write per iteration, however many messages it got.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Chat, arguments

chat = Chat()
dirty: list[Connection] = []
flush_scheduled = False


def flush() -> None:
    global flush_scheduled
    flush_scheduled = False
    connections = dirty[:]
    dirty.clear()
    for connection in connections:
        batch, connection.pending = connection.pending, []
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.write(b"".join(batch))


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.nick: str | None = None
        self.rooms: set[str] = set()
        self.pending: list[bytes] = []
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if line.strip():
                chat.handle(self, line)

    def queue(self, data: bytes) -> None:
        global flush_scheduled
        if not self.pending:
            dirty.append(self)
        self.pending.append(data)
        if not flush_scheduled:
            flush_scheduled = True
            asyncio.get_running_loop().call_soon(flush)

    def connection_lost(self, exc: Exception | None) -> None:
        chat.gone(self)
        self.transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, host, port, backlog=4096)
    name = "uvloop" if "uvloop" in type(loop).__module__ else "asyncio"
    print(f"{name} baseline listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    options = arguments(__doc__.splitlines()[0])
    if options.uvloop:
        import uvloop

        uvloop.run(serve(options.host, options.port))
    else:
        asyncio.run(serve(options.host, options.port))
