"""Micro-benchmark: the CPU the SQLite store spends per message, in the process.

Stores batches the way the benchmark's scenarios bring them (ping-pong: 100 rooms,
about 91 messages a batch; many-rooms: 1,000 rooms, about 2 a batch) for a few
seconds of wall time, with the checkpoint thread running, and prints the process's
CPU microseconds per message. Run from a checkout:

    .venv/bin/python bench/micro/store.py [SECONDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gevent

from gchat.server.sqlite_store import SqliteHistory

EVENT = (b'{"op":"msg","room":"pp-00","from":"p00","text":"1234567890123 xxxxxxxxxxxxxxxxxxxx",'
         b'"seq":123,"ts":1764680000000}')
SHAPES = {"ping-pong": (100, 91), "many-rooms": (1000, 2)}


def measure(rooms: int, batch: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteHistory(Path(directory) / "bench.db")
        try:
            seqs = [0] * rooms
            turn = stored = 0
            start, cpu = time.monotonic(), time.process_time()
            while time.monotonic() - start < seconds:
                messages = []
                for _ in range(batch):
                    turn = (turn * 7 + 13) % rooms
                    seqs[turn] += 1
                    messages.append((f"room-{turn}", seqs[turn], EVENT))
                store.append_batch(messages)
                stored += batch
                gevent.sleep(0)
            return 1e6 * (time.process_time() - cpu) / stored
        finally:
            store.close()


def main(seconds: float) -> None:
    for name, (rooms, batch) in SHAPES.items():
        print(f"{name}: {measure(rooms, batch, seconds):.2f} us CPU per message")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
