"""The SQLite store never makes the event loop wait on the disk (sqlite_store.py):
with synchronous NORMAL a batch commits in the event loop, except when the commit
may start the WAL over, which syncs its header. A shim that makes fdatasync slow (a
busy disk) shows any sync that happens in the event loop as a stall."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SLOW_FDATASYNC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    usleep(300000);
    return real(fd);
}
"""

# Commits a batch, lets the checkpoint thread copy the whole WAL, then commits the
# next batch while a greenlet ticks every 5 ms; prints the longest gap between ticks.
CHILD = textwrap.dedent("""
    import sys, time
    import gevent
    from gchat.server.sqlite_store import SqliteHistory
    store = SqliteHistory(sys.argv[1])
    store.append_batch([("a", 1, b'{"op":"msg","seq":1}')])
    gevent.sleep(2.5)  # the checkpoint runs once a second
    gaps = []
    def tick():
        last = time.monotonic()
        while True:
            gevent.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)
    gevent.spawn(store.append_batch, [("a", 2, b'{"op":"msg","seq":2}')]).get()
    gevent.sleep(0.05)
    ticker.kill()
    assert store.after("a", 0, 10) == [b'{"op":"msg","seq":1}', b'{"op":"msg","seq":2}']
    store.close()
    print("%.3f" % max(gaps))
""")


def test_a_commit_after_a_whole_checkpoint_does_not_stall_the_event_loop(tmp_path):
    if shutil.which("gcc") is None:  # .ci/run installs it (the C load needs it too)
        pytest.skip("gcc builds the slow-fdatasync shim")
    (tmp_path / "shim.c").write_text(SLOW_FDATASYNC)
    shim = tmp_path / "shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-ldl"],
                   check=True)
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "h.db")],
                           env=dict(os.environ, LD_PRELOAD=str(shim)),
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    stall = float(child.stdout.split()[-1])
    assert stall < 0.2, f"the event loop stood still {stall:.3f} s during one commit"
