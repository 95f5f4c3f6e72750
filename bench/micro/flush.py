"""Micro-benchmark: the CPU one delivery costs in the engine's write path.

200 sessions on Unix socket pairs; each loop turn queues one message to 10 of them
with `send_to_each` and lets the Flusher write it; the peers are drained every 50
turns. Prints CPU microseconds per delivery: the kernel's send and gchat's Python
around it (`Session._flush`, `_written`, the Flusher). Run from a checkout:

    .venv/bin/python bench/micro/flush.py [TURNS]
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gevent
import gevent.socket

from gchat.core.session import Session, send_to_each

SESSIONS, MEMBERS = 200, 10
MESSAGE = b'{"op":"msg","room":"r","from":"p","text":"hello world 1234567890","seq":1,"ts":1}\n'


def main(turns: int) -> None:
    sessions, peers = [], []
    for _ in range(SESSIONS):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        session = Session()
        session._sock = gevent.socket.socket(fileno=ours.detach())
        sessions.append(session)
        peers.append(theirs)
    start = time.process_time()
    for turn in range(turns):
        first = (turn * MEMBERS) % SESSIONS
        send_to_each(sessions[first:first + MEMBERS], MESSAGE, None)
        gevent.sleep(0)  # the Flusher writes
        if turn % 50 == 0:
            for peer in peers:
                try:
                    while peer.recv(65536):
                        pass
                except BlockingIOError:
                    pass
    per_delivery = 1e6 * (time.process_time() - start) / (turns * MEMBERS)
    print(f"{per_delivery:.2f} us CPU per delivery")


if __name__ == "__main__":
    gevent.spawn(main, int(sys.argv[1]) if len(sys.argv) > 1 else 3000).join()
