"""A one-second smoke of every benchmark scenario: the benchmark runs, end to end, with
real server and load processes (the Python load: test_cload.py has the C one). No timing
is asserted: figures belong to the benchmark."""

from __future__ import annotations

import json
import sys

import pytest
from gevent import subprocess

from tests.cluster.conftest import redis_server_binary
from tests.server.process import ROOT


def bench(tmp_path, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "gchat.bench", "run", "--scale", "smoke",
                             "--duration", "1", "--load", "python", "--results", str(tmp_path), *args],
                            cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"Traceback" not in result.stderr
    [path] = tmp_path.glob("*.json")
    return json.loads(path.read_text())


def test_every_scenario_runs_against_gchat(tmp_path):
    report = bench(tmp_path)
    figures = {run["scenario"]: run["figures"] for run in report["runs"]}
    assert set(figures) == {"fan-out", "many-rooms", "ping-pong", "idle"}
    assert figures["fan-out"]["deliveries_per_s"] > 0
    assert figures["fan-out"]["expected"] > 0 and figures["fan-out"]["lost"] == 0
    assert figures["many-rooms"]["expected"] > 0
    assert figures["many-rooms"]["lost"] == 0 and figures["many-rooms"]["failed"] == 0
    assert figures["ping-pong"]["says_per_s"] > 0
    assert figures["idle"]["alive"] == figures["idle"]["sessions"] == 50
    assert report["machine"]["nproc"] >= 1 and report["command"].startswith("gchat-bench run")


def test_irc_and_websocket_subscribers_get_every_message_and_idle_sessions_stay(tmp_path):
    # JSON, IRC and WebSocket, one after the other, as the figures of issues 13 and 14
    # compare them; a baseline has neither door: those runs are skipped rows, and the
    # run exits 0.
    report = bench(tmp_path, "--scenario", "fan-out", "--scenario", "idle", "--server", "gchat",
                   "--server", "threads", "--transport", "json", "--transport", "irc",
                   "--transport", "ws")
    runs = [(r["scenario"], r["server"], r["transport"], r["status"]) for r in report["runs"]]
    assert runs == [(scenario, server, transport,
                     "skipped" if server == "threads" and transport != "json" else "ok")
                    for scenario in ("fan-out", "idle") for server in ("gchat", "threads")
                    for transport in ("json", "irc", "ws")]
    for run in report["runs"]:
        figures = run["figures"]
        if run["status"] == "skipped":
            assert figures == {} and "only JSON" in run["detail"]
        elif run["scenario"] == "fan-out":
            assert figures["deliveries_per_s"] > 0 and figures["expected"] > 0, run
            assert figures["lost"] == figures["seq_gaps"] == figures["failed"] == 0, run
            assert figures["p50_ms"] > 0, run  # the checking subscriber's latencies
        else:
            assert figures["alive"] == figures["sessions"] == 50, run
            assert "rss_per_session_kib" in figures and figures["p50_ms"] > 0, run


def test_gchat_memory_is_gchat_without_its_durable_store(tmp_path):
    # --store names gchat's store; gchat-memory keeps its history in memory regardless.
    report = bench(tmp_path, "--server", "gchat", "--server", "gchat-memory", "--store", "sqlite",
                   "--scenario", "ping-pong", "--scenario", "many-rooms")
    runs = {(run["server"], run["scenario"]): run for run in report["runs"]}
    assert {server: run["store"] for (server, _), run in runs.items()} == {
        "gchat": "sqlite", "gchat-memory": "memory"}
    assert runs["gchat-memory", "ping-pong"]["figures"]["says_per_s"] > 0
    many_rooms = runs["gchat-memory", "many-rooms"]["figures"]
    assert many_rooms["expected"] > 0 and many_rooms["lost"] == 0


@pytest.mark.parametrize("server", ["threads", "asyncio", "gevent"])
def test_the_baselines_speak_the_benchmark_subset(tmp_path, server):
    report = bench(tmp_path, "--server", server, "--scenario", "many-rooms", "--scenario", "idle")
    figures = {run["scenario"]: run["figures"] for run in report["runs"]}
    assert figures["many-rooms"]["lost"] == 0 and figures["many-rooms"]["expected"] > 0
    assert figures["idle"]["alive"] == 50


def test_a_two_node_cluster_runs_the_benchmark(tmp_path):
    redis_server_binary()  # installed when missing, or a clear failure
    report = bench(tmp_path, "--server", "gchat-cluster", "--scenario", "fan-out", "--scenario", "many-rooms")
    figures = {run["scenario"]: run["figures"] for run in report["runs"]}
    assert figures["fan-out"]["deliveries_per_s"] > 0 and figures["fan-out"]["redis_cpu_pct"] >= 0
    assert figures["many-rooms"]["lost"] == 0 and figures["many-rooms"]["failed"] == 0
