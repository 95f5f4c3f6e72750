"""How a benchmark run ends when a server does not keep up or fails, with real server and
load processes: a baseline that cannot keep up is a timed-out row and the run exits 0;
gchat timing out or failing exits 1 with a one-line reason. Never a traceback."""

from __future__ import annotations

import json
import os
import sys

import pytest
from gevent import subprocess

from tests.server.process import ROOT

# A session must be set up within a microsecond: no server can (one round trip at least).
CANNOT_KEEP_UP = {"GCHAT_BENCH_SETUP_TIMEOUT": "0.000001"}


def bench(tmp_path, *args: str, env: dict[str, str] | None = None,
          load: str = "python") -> tuple[int, str, str, dict]:
    """Run `gchat-bench run` at the smoke scale: exit status, stdout, stderr, the JSON."""
    result = subprocess.run([sys.executable, "-m", "gchat.bench", "run", "--scale", "smoke",
                             "--duration", "1", "--load", load, "--results", str(tmp_path), *args],
                            cwd=ROOT, capture_output=True, timeout=300, env={**os.environ, **(env or {})})
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in out + err, out + err
    [path] = tmp_path.glob("*.json")
    return result.returncode, out, err, json.loads(path.read_text())


@pytest.mark.parametrize("load", ["python", "c"])
def test_a_baseline_that_cannot_keep_up_is_a_timed_out_row_and_the_run_exits_0(tmp_path, load):
    status, out, err, report = bench(tmp_path, "--server", "threads", "--scenario", "fan-out",
                                     env=CANNOT_KEEP_UP, load=load)
    assert status == 0, out + err
    [run] = report["runs"]
    assert (run["server"], run["status"], run["load"]) == ("threads", "timed out", load)
    assert run["figures"]["sessions"] == 22 and run["figures"]["sessions_set_up"] < 22
    assert run["detail"].startswith("setup: ") and "of 22 sessions set up" in run["detail"]
    assert "timed out: setup:" in out  # the table's row


def test_gchat_timing_out_exits_1_with_one_line_and_the_baseline_row_still_shows(tmp_path):
    status, out, err, report = bench(tmp_path, "--server", "gchat", "--server", "threads",
                                     "--scenario", "ping-pong", env=CANNOT_KEEP_UP)
    assert status == 1, out + err
    assert [(r["server"], r["status"]) for r in report["runs"]] == [("gchat", "timed out"),
                                                                    ("threads", "timed out")]
    [line] = err.strip().splitlines()
    assert line.startswith("Error: gchat did not complete: ping-pong on gchat timed out: setup: ")


def test_a_failing_gchat_exits_1_with_one_line(tmp_path):
    status, out, err, report = bench(tmp_path, "--server", "gchat", "--scenario", "ping-pong",
                                     "--server-arg=--no-such-flag")
    assert status == 1, out + err
    [run] = report["runs"]
    assert run["status"] == "failed" and "the server exited: exit status 2" in run["detail"]
    [line] = err.strip().splitlines()
    assert line.startswith("Error: gchat did not complete: ping-pong on gchat failed: the server exited")
    assert "--no-such-flag" in line
