"""Baseline: a thread-per-connection server, standard library only, no monkey-patching.

Each connection has a reader thread and a writer thread. The reader handles requests
under one global lock (the chat state is shared); `queue` appends to the connection's
buffer and notifies its writer, which joins everything buffered into one sendall: the
best batching this model allows without an event loop.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Chat, arguments

threading.stack_size(256 * 1024)  # 10,000 connections are 20,000 threads
chat = Chat()
state_lock = threading.Lock()


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nick: str | None = None
        self.rooms: set[str] = set()
        self.pending: list[bytes] = []
        self.ready = threading.Condition(threading.Lock())
        self.open = True

    def queue(self, data: bytes) -> None:
        with self.ready:
            self.pending.append(data)
            self.ready.notify()

    def write_loop(self) -> None:
        while True:
            with self.ready:
                while not self.pending and self.open:
                    self.ready.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            try:
                self.sock.sendall(b"".join(batch))
            except OSError:
                return

    def read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                lines = (buffer + data).split(b"\n")
                buffer = lines.pop()
                with state_lock:
                    for line in lines:
                        if line.strip():
                            chat.handle(self, line)
        except OSError:
            pass
        finally:
            with state_lock:
                chat.gone(self)
            with self.ready:
                self.open = False
                self.ready.notify()
            self.sock.close()


def serve(host: str, port: int) -> None:
    listener = socket.create_server((host, port), backlog=4096)
    print(f"threads baseline listening on {host}:{port}", file=sys.stderr, flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock)
        threading.Thread(target=connection.write_loop, daemon=True).start()
        threading.Thread(target=connection.read_loop, daemon=True).start()


if __name__ == "__main__":
    options = arguments(__doc__.splitlines()[0])
    try:
        serve(options.host, options.port)
    except KeyboardInterrupt:
        pass
