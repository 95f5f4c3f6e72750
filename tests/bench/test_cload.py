"""The C load generator (bench/loadgen): it builds, and at tiny sizes it reports zero
loss and exactly the deliveries expected for every scenario, against gchat over each
door it has (JSON, IRC, WebSocket) and against every baseline, through the runner as
`make bench` uses it. A server that drops one delivery shows that the checks bite: one
message lost, one seq gap. Counts only: timings belong to the benchmark."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent import subprocess
from gevent.server import StreamServer

from gchat.bench.runner import BASELINES, C_LOAD, SCALES, _free_port, build_c_load, run_scenario

SCENARIOS = ["fan-out", "many-rooms", "ping-pong", "idle"]
UVLOOP = pytest.mark.skipif(importlib.util.find_spec("uvloop") is None,
                            reason="uvloop: requirements-bench.txt")


@pytest.fixture(scope="module")
def c_load() -> Path:
    """`make loadgen`: the binary, built with the system compiler."""
    return build_c_load()


def test_the_c_load_builds_into_an_ignored_directory(c_load):
    assert c_load == C_LOAD and c_load.stat().st_mode & 0o111
    ignored = subprocess.run(["git", "check-ignore", "-q", str(c_load)], cwd=c_load.parents[2])
    assert ignored.returncode == 0  # never committed


def check_counts(scenario: str, figures: dict[str, Any]) -> None:
    """Every acknowledged say reached every subscriber of its room, once, in order."""
    params = SCALES["smoke"][scenario]
    if scenario == "idle":
        assert figures["alive"] == figures["sessions"] == params["sessions"], figures
        assert figures["p50_ms"] > 0, figures  # the probe's round trips
        return
    assert figures["says"] > 0 and figures["lost"] == 0, figures
    # subscribers per say: ping-pong's receiver of each room
    per_say = {"fan-out": params.get("subscribers"), "many-rooms": params.get("subscribers_per_room"),
               "ping-pong": 1}[scenario]
    assert figures["expected"] == figures["says"] * per_say == figures["delivered"], figures
    if scenario != "ping-pong":
        assert figures["failed"] == figures["seq_gaps"] == 0, figures
        assert figures["p50_ms"] > 0, figures  # texts were checked: their latencies


def run(server: str, scenario: str, transport: str = "json") -> dict[str, Any]:
    bench_run = run_scenario(server, scenario, SCALES["smoke"][scenario], duration=0.5, procs=1,
                             store="memory", transport=transport, load="c")
    assert (bench_run.status, bench_run.detail) == ("ok", ""), bench_run
    assert bench_run.load == "c" and bench_run.figures["load_cpu_pct"] >= 0
    return bench_run.figures


@pytest.mark.parametrize("transport", ["json", "irc", "ws"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_against_gchat_every_door_gets_every_message(c_load, scenario, transport):
    check_counts(scenario, run("gchat", scenario, transport))


@pytest.mark.parametrize("server", ["threads", "asyncio", "gevent", pytest.param("uvloop", marks=UVLOOP)])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_against_every_baseline_nothing_is_lost(c_load, scenario, server):
    check_counts(scenario, run(server, scenario))


# -- the load alone, on the runner's lines ---------------------------------------------------


def drive(job: dict[str, Any], duration: float = 0.3) -> dict[str, Any]:
    """Run the C load on `job` as the runner does; its last answer (result, or the
    failure or time-out that ended it)."""
    process = subprocess.Popen([str(C_LOAD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None

    def tell(message: dict[str, Any]) -> None:
        process.stdin.write(json.dumps(message).encode() + b"\n")
        process.stdin.flush()

    def hear() -> dict[str, Any]:
        with gevent.Timeout(15, AssertionError("the C load did not answer in 15 s")):
            line = process.stdout.readline()
        assert line, "the C load exited without an answer"
        return json.loads(line)

    try:
        tell(job)
        answer = hear()
        if answer["event"] != "ready":
            return answer
        tell({"duration": duration})
        measured = hear()
        assert measured["event"] == "measured", measured
        if job["scenario"] in ("fan-out", "many-rooms"):
            tell({"acked_rooms": measured["acked_rooms"]})
        return hear()
    finally:
        process.kill()
        process.wait()


def fan_out_job(port: int) -> dict[str, Any]:
    return {"scenario": "fan-out", "host": "127.0.0.1", "ports": [port], "proc": 0, "procs": 1,
            "setup_timeout": 10, "transport": "json", "door_ports": [],
            "subscribers": 3, "publishers": 1, "window": 1,
            "finish_timeout": 1}  # how long it waits for what was lost


@pytest.fixture
def lossy_server():
    """The gevent baseline, in this process, except that it drops the msg of the third
    say on its way to s0 (the subscriber that checks texts); its port."""
    spec = importlib.util.spec_from_file_location("gevent_baseline", BASELINES / "gevent_server.py")
    assert spec is not None and spec.loader is not None
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    common = sys.modules["common"]  # the baselines' shared module, which it imported

    class LossyConnection(baseline.Connection):
        drop_next_msg = False

        def queue(self, data: bytes) -> None:
            if self.drop_next_msg and data.startswith(b'{"op":"msg"'):
                self.drop_next_msg = False
                return
            super().queue(data)

    class LossyChat(common.Chat):
        says = 0

        def handle(self, peer, line: bytes) -> None:
            if b'"op":"say"' in line:
                self.says += 1
                if self.says == 3:
                    for member in self.rooms["fan"].values():
                        if member.nick == "s0":
                            member.drop_next_msg = True
            super().handle(peer, line)

    baseline.chat = LossyChat()
    server = StreamServer(("127.0.0.1", 0), lambda sock, _: LossyConnection(sock).read_loop())
    server.start()
    try:
        yield server.server_port
    finally:
        server.stop()


def test_a_dropped_delivery_is_one_lost_message_and_one_seq_gap(c_load, lossy_server):
    result = drive(fan_out_job(lossy_server))
    assert result["event"] == "result", result
    assert result["says"] > 3 and result["expected"] == 3 * result["says"], result
    assert result["expected"] - result["delivered"] == 1, result
    assert result["seq_gaps"] == 1, result


def test_a_server_that_refuses_is_a_failure_in_one_line(c_load):
    result = drive(fan_out_job(_free_port()))  # nothing listens there
    assert result["event"] == "failed" and "Connection refused" in result["error"], result
