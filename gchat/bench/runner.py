"""The benchmark runner: a server under test, load processes, and the figures.

Strategy: the server runs as a subprocess pinned to CPU 0 (when the machine has two or
more), the load processes (load.py) on the other CPUs, so the server's figure is what
one core can do. Each scenario is a fresh server: start it, note its RSS, hand every
load process its share, wait until all are `ready` (for `idle` that time is the
figure), say `go`, collect. The load processes report their own CPU time: a load
process near a full core measures itself, not the server.

A server that cannot keep up is a result, not a crash: when a load process answers
`timed_out` (a session not set up within the setup timeout, or no reply within
REPLY_TIMEOUT while measuring), the run is marked "timed out" with how far it got, and
the other servers go on. The setup timeout is load.SETUP_TIMEOUT (30 s per session);
the environment variable GCHAT_BENCH_SETUP_TIMEOUT (seconds) overrides it, for tests
that need a server which cannot keep up.

The load ("c" or "python") is what the load processes are: the C load generator
(bench/loadgen/, built by `make loadgen` into bench/build/gchat-load: one epoll thread,
well under a core where the Python load saturates its own) or load.py's greenlets. Both
speak the same lines to the runner and report the same figures; the C load reports
its latencies as a histogram, merged here with any list.

The transport ("json", "irc" or "ws") is the subscribers' door (see load.py): with
"irc" each gchat node also serves IRC on a free port, with "ws" HTTP (its WebSocket,
/ws), and the load's subscribers use it. The baselines speak only JSON: another
transport's run of one is a "skipped" row, not a figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent import subprocess

from ..errors import GchatError
from .load import SETUP_TIMEOUT, TRANSPORTS

__all__ = ["C_LOAD", "LOADS", "SCALES", "SERVERS", "TRANSPORTS", "BenchRun", "build_c_load",
           "run_scenario", "speaks_irc", "store_of"]

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ROOT / "bench" / "baselines"
C_LOAD = ROOT / "bench" / "build" / "gchat-load"  # built by `make loadgen`, never committed
LOADS = ("c", "python")
LOAD_CPU_LIMIT = 70.0  # a load above this share of its core may be measuring itself

SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "fan-out": {"subscribers": 1000, "publishers": 10, "window": 16},
        "many-rooms": {"rooms": 1000, "subscribers_per_room": 10, "publishers": 100, "rate": 2000},
        "ping-pong": {"rooms": 100},
        "idle": {"sessions": 10_000, "rooms": 1000},
    },
    "smoke": {
        "fan-out": {"subscribers": 20, "publishers": 2, "window": 4},
        "many-rooms": {"rooms": 10, "subscribers_per_room": 3, "publishers": 5, "rate": 100},
        "ping-pong": {"rooms": 5},
        "idle": {"sessions": 50, "rooms": 5},
    },
}

SERVERS = ("gchat", "gchat-memory", "threads", "asyncio", "uvloop", "gevent", "gchat-redis",
           "gchat-cluster")
# gchat itself: with the store that --store names (SQLite by default), or with the memory
# store whatever --store says, so that one run shows what the durable store costs.
GCHAT_SERVERS = ("gchat", "gchat-memory")
# gchat joined to a Redis backplane: one node (what the backplane costs) or two nodes,
# sessions spread over both (what a cluster gives). Nothing is pinned for these.
CLUSTER_NODES = {"gchat-redis": 1, "gchat-cluster": 2}


class BenchFailed(GchatError):
    """A server under test or a load process failed."""


@dataclass
class BenchRun:
    """What one scenario against one server gave."""

    server: str
    scenario: str
    params: dict[str, Any]
    duration: float
    procs: int
    figures: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # or "timed out" (the server did not keep up), "failed" or "skipped"
    detail: str = ""  # when not ok, one line: how far it got, or why it failed
    transport: str = "json"  # the subscribers' door: "json", "irc" or "ws"
    load: str = "python"  # the load generator: "c" or "python"
    store: str = ""  # gchat's history: "sqlite", "memory" or "redis" (a baseline keeps none)

    @property
    def label(self) -> str:
        """How the run is named in messages: the scenario, the server, a transport."""
        over = {"irc": " over IRC", "ws": " over WebSocket"}.get(self.transport, "")
        return f"{self.scenario} on {self.server}{over}"

    @property
    def load_busy(self) -> float | None:
        """The load's CPU share of its core when it passed LOAD_CPU_LIMIT (measuring, or
        registering for idle, which is what idle times), else None."""
        busiest = max(self.figures.get("load_cpu_pct", 0), self.figures.get("register_load_cpu_pct", 0))
        return busiest if busiest > LOAD_CPU_LIMIT else None


def store_of(server: str, store: str) -> str:
    """Where `server` keeps its history when gchat-bench's --store is `store`: "sqlite",
    "memory" or "redis" (a cluster's), or "" for a baseline, which keeps none."""
    if server in CLUSTER_NODES:
        return "redis"
    if server == "gchat-memory":
        return "memory"
    return store if server == "gchat" else ""


def speaks_irc(server: str) -> bool:
    """Whether `server` has gchat's other doors, IRC and WebSocket (gchat, on one node
    or a cluster)."""
    return server in GCHAT_SERVERS or server in CLUSTER_NODES


def build_c_load() -> Path:
    """Build the C load generator if it is missing or older than its sources (`make
    loadgen`, which installs a compiler when it can); its path. BenchFailed if it
    cannot be built."""
    if shutil.which("make") is None:
        raise BenchFailed("the C load needs make and a C compiler (apt-get install make gcc)")
    result = subprocess.run(["make", "--no-print-directory", "-s", "loadgen"], cwd=ROOT,
                            capture_output=True, timeout=300)
    if result.returncode != 0 or not C_LOAD.exists():
        why = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        last = why[-1] if why else f"status {result.returncode}"
        raise BenchFailed(f"building the C load failed: {last}")
    return C_LOAD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    """Resident set size of `pid`, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every CPU, kernel included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load CPUs): CPU 0 for the server, the rest for the load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def server_command(name: str, port: int, store: str, irc_port: int = 0,
                   http_port: int = 0) -> list[str]:
    """The command line that serves `name` on 127.0.0.1:`port` (`store` is gchat's
    --store, or for a cluster node its --backplane URL); gchat also serves IRC on
    `irc_port` and HTTP (WebSocket) on `http_port` unless they are 0."""
    if name in CLUSTER_NODES:
        return [*server_command("gchat", port, "memory", irc_port, http_port), "--backplane", store]
    if name in GCHAT_SERVERS:
        return [sys.executable, "-m", "gchat.server", "--port", str(port), "--irc-port", str(irc_port),
                "--http-port", str(http_port),
                "--rate", "1000000000",
                "--burst", "1000000000", "--idle-timeout", "0", "--max-clients", "50000",
                "--max-connections", "60000", "--store", store, "--log-level", "WARNING"]
    script = {"threads": "threads_server.py", "asyncio": "asyncio_server.py",
              "uvloop": "asyncio_server.py", "gevent": "gevent_server.py"}[name]
    command = [sys.executable, str(BASELINES / script), "--port", str(port)]
    return command + (["--uvloop"] if name == "uvloop" else [])


class _Process:
    """A child process pinned to `cpus`, stdin/stdout as pipes."""

    def __init__(self, command: list[str], cpus: set[int] | None, *, stdin: bool = False) -> None:
        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        # stderr goes to a file, not a pipe: a child with much to say (a traceback per
        # failed greenlet or connection) would block on a full pipe nobody reads.
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, cwd=ROOT, preexec_fn=pin, start_new_session=True,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stderr=self.errors)

    def tell(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def hear(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with gevent.Timeout(timeout, BenchFailed(f"no answer from a load process in {timeout:g} s")):
            line = self.proc.stdout.readline()
        if not line:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)  # its stdout closed: it is exiting
            raise BenchFailed(f"a load process died: {self.last_words()}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") == "failed":
            raise BenchFailed(f"a load process failed: {message['error']}")
        return message

    def last_words(self) -> str:
        """How the exited process ended, in one line: its status and last stderr line
        (a failure is reported in one line; its traceback is not for the terminal)."""
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        status = "still running" if self.proc.poll() is None else f"exit status {self.proc.returncode}"
        return status + (f": {lines[-1].strip()}" if lines else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # SIGINT: py-spy, when profiling, writes its output
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.errors.close()


def _wait_listening(server: _Process, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchFailed(f"the server exited: {server.last_words()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            gevent.sleep(0.05)
    raise BenchFailed("the server did not listen")


def percentile(sorted_values: list[int], fraction: float) -> float:
    """The value at `fraction` (0..1) of `sorted_values`, nearest rank."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, int(fraction * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def latency_counts(results: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Every load process's latencies (us) as sorted (value, count) pairs: the Python
    load's lists ("latencies_us") and the C load's histograms ("latency_hist_us")."""
    counts: Counter[int] = Counter()
    for result in results:
        counts.update(result.get("latencies_us", []))
        for value, count in result.get("latency_hist_us", []):
            counts[int(value)] += int(count)
    return sorted(counts.items())


def percentile_of_counts(pairs: list[tuple[int, int]], fraction: float) -> float:
    """`percentile` of the values that sorted (value, count) `pairs` stand for."""
    total = sum(count for _, count in pairs)
    if not total:
        return 0.0
    rank = min(total - 1, max(0, int(fraction * total + 0.5) - 1))
    seen = 0
    for value, count in pairs:
        seen += count
        if seen > rank:
            return float(value)
    return float(pairs[-1][0])


def run_scenario(server_name: str, scenario: str, params: dict[str, Any], *, duration: float,
                 procs: int, store: str = "sqlite", profile: Path | None = None,
                 server_args: tuple[str, ...] = (), transport: str = "json",
                 load: str = "python") -> BenchRun:
    """Run `scenario` against a fresh `server_name`; its figures. With `profile`, the
    server runs under py-spy, which writes a flame graph there (the server's RSS and
    CPU figures are then py-spy's own). `server_args` go to gchat's command line.
    `transport` is the subscribers' door; "irc" against a baseline is skipped. `load`
    is "python" (load.py) or "c" (C_LOAD, which must be built: build_c_load)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    if load not in LOADS:
        raise ValueError(f"load must be one of {LOADS}, not {load!r}")
    if load == "c" and not C_LOAD.exists():
        raise BenchFailed(f"no C load at {C_LOAD}: make loadgen")
    load_command = [str(C_LOAD)] if load == "c" else [sys.executable, "-m", "gchat.bench", "load"]
    run = BenchRun(server_name, scenario, params, duration, procs, transport=transport, load=load)
    if transport != "json" and not speaks_irc(server_name):
        run.status = "skipped"
        run.detail = f"no {transport} door (a baseline speaks only JSON)"
        return run
    setup_timeout = float(os.environ.get("GCHAT_BENCH_SETUP_TIMEOUT", SETUP_TIMEOUT))
    server_cpus, load_cpus = cpu_split()
    nodes = CLUSTER_NODES.get(server_name, 1)
    if server_name in CLUSTER_NODES:
        server_cpus = load_cpus = None  # nodes, Redis and the load share the machine
    ports = [_free_port() for _ in range(nodes)]
    door_ports = [_free_port() for _ in range(nodes)] if transport != "json" else []
    with tempfile.TemporaryDirectory(prefix="gchat-bench-") as tmp:
        redis_server = _start_redis(tmp) if server_name in CLUSTER_NODES else None
        run.store = store_of(server_name, store)
        if redis_server is not None:
            store_arg = redis_server[1]
        else:
            store_arg = f"sqlite:{tmp}/bench.db" if run.store == "sqlite" else "memory"
        servers: list[_Process] = []
        loads: list[_Process] = []
        try:
            for node, port in enumerate(ports):
                door = door_ports[node] if door_ports else 0
                command = server_command(server_name, port, store_arg,
                                         door if transport == "irc" else 0,
                                         door if transport == "ws" else 0)
                if server_name.startswith("gchat"):
                    command += server_args
                if profile is not None:
                    form = "raw" if profile.suffix == ".txt" else "flamegraph"  # raw: collapsed stacks
                    command = ["py-spy", "record", "--nonblocking", "--idle", "-f", form, "-o",
                               str(profile.with_stem(f"{profile.stem}-{port}") if nodes > 1 else profile),
                               "--", *command]
                servers.append(_Process(command, server_cpus))
            for server, port in zip(servers, ports, strict=True):
                _wait_listening(server, port)
            for server, port in zip(servers, door_ports, strict=False):
                _wait_listening(server, port)
            rss_before = _total(_rss, servers)
            started = time.monotonic()
            for index in range(procs):
                load_process = _Process(load_command, load_cpus, stdin=True)
                loads.append(load_process)
                load_process.tell({"scenario": scenario, "host": "127.0.0.1", "ports": ports, "proc": index,
                           "procs": procs, "setup_timeout": setup_timeout, "transport": transport,
                           "door_ports": door_ports, **params})
            answers = [load_process.hear(timeout=180) for load_process in loads]
            setup_s = time.monotonic() - started
            if any(answer["event"] == "timed_out" for answer in answers):
                return _setup_timed_out(run, answers, setup_s)
            cpu_before = _total(_cpu_seconds, servers)
            busy_before = _machine_busy_seconds()
            redis_cpu_before = _cpu_seconds(redis_server[0].proc.pid) if redis_server else 0.0
            for load_process in loads:
                load_process.tell({"duration": duration})
            measured = [load_process.hear(timeout=duration + 120) for load_process in loads]
            for answer in measured:
                if answer["event"] == "timed_out":
                    run.status, run.detail = "timed out", f"measuring: {answer['error']}"
                    run.figures = {"setup_s": round(setup_s, 3)}
                    return run
            server_cpu = _total(_cpu_seconds, servers) - cpu_before
            machine_busy = _machine_busy_seconds() - busy_before
            if redis_server is not None:
                run.figures["redis_cpu_s"] = _cpu_seconds(redis_server[0].proc.pid) - redis_cpu_before
            if scenario in ("many-rooms", "fan-out"):  # the loss check: what was acknowledged
                acked: dict[str, int] = {}
                for part in measured:
                    for room, count in part["acked_rooms"].items():
                        acked[room] = acked.get(room, 0) + count
                for load_process in loads:
                    load_process.tell({"acked_rooms": acked})
            results = [load_process.hear(timeout=60) for load_process in loads]
            rss_after = _total(_rss, servers)
        finally:
            for process in [*loads, *servers]:
                process.stop()
            if redis_server is not None:
                redis_server[0].stop()
    redis_cpu = run.figures.pop("redis_cpu_s", None)
    run.figures = _figures(scenario, params, results, setup_s, server_cpu,
                           rss_before, rss_after)
    elapsed = max(r.get("elapsed", 0.0) for r in measured) or 1.0
    if redis_cpu is not None:
        run.figures["redis_cpu_pct"] = round(100 * redis_cpu / elapsed, 1)
    # Everything else the machine ran meanwhile (kernel threads, other programs): a
    # busy machine shows in latency tails, so the table says how busy it was.
    others = machine_busy - server_cpu - (redis_cpu or 0.0) - sum(m["cpu_s"] for m in measured)
    run.figures["other_cpu_pct"] = round(max(0.0, 100 * others / elapsed), 1)
    return run


def _setup_timed_out(run: BenchRun, answers: list[dict[str, Any]], setup_s: float) -> BenchRun:
    """`run` marked timed out in setup, with how many sessions the load processes set up
    (a process that answered `ready` set up all of its share)."""
    set_up = sum(answer.get("sessions_set_up", answer["sessions"]) for answer in answers)
    total = sum(answer["sessions"] for answer in answers)
    timeout = max(answer.get("timeout_s", 0.0) for answer in answers)
    run.status = "timed out"
    run.detail = f"setup: {set_up:,} of {total:,} sessions set up, then one took over {timeout:g} s"
    run.figures = {"sessions_set_up": set_up, "sessions": total, "setup_s": round(setup_s, 3)}
    return run


def _total(measure: Any, processes: list[_Process]) -> Any:
    """`measure(pid)` summed over `processes` (RSS or CPU of a cluster's nodes)."""
    return sum(measure(process.proc.pid) for process in processes)


def _start_redis(directory: str) -> tuple[_Process, str]:
    """A redis-server for a cluster run (as `make run-cluster` configures it); its URL."""
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
               "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    try:
        process = _Process(command, None)
    except FileNotFoundError:
        raise BenchFailed("a cluster run needs redis-server: apt-get install redis-server") from None
    _wait_listening(process, port)
    return process, f"redis://127.0.0.1:{port}/0"


def _figures(scenario: str, params: dict[str, Any], results: list[dict[str, Any]], setup_s: float,
             server_cpu: float, rss_before: int, rss_after: int) -> dict[str, Any]:
    elapsed = max(r.get("elapsed", 0.0) for r in results) or 1.0
    latencies = latency_counts(results)
    figures: dict[str, Any] = {
        "setup_s": round(setup_s, 3),
        "server_rss_mib": round(rss_after / 2**20, 1),
        "load_cpu_pct": round(max(100 * r["cpu_s"] / max(elapsed, 1e-9) for r in results), 1),
    }
    if scenario != "idle":
        figures["server_cpu_pct"] = round(100 * server_cpu / elapsed, 1)
    if latencies:
        figures.update({"p50_ms": percentile_of_counts(latencies, 0.50) / 1000,
                        "p99_ms": percentile_of_counts(latencies, 0.99) / 1000,
                        "p999_ms": percentile_of_counts(latencies, 0.999) / 1000,
                        "max_ms": latencies[-1][0] / 1000})
    if scenario in ("fan-out", "many-rooms"):
        # lost = expected - delivered once the queues drained; seq gaps: texts a
        # checking subscriber got out of its sender's order (or repeated, or after a gap)
        expected = sum(r["expected"] for r in results)
        delivered = sum(r["delivered"] for r in results)
        figures.update({"says": sum(r["says"] for r in results),
                        "says_per_s": round(sum(r["says"] for r in results) / elapsed),
                        "failed": sum(r["failed"] for r in results),
                        "expected": expected, "delivered": delivered, "lost": expected - delivered,
                        "seq_gaps": sum(r["seq_gaps"] for r in results)})
    if scenario == "fan-out":
        # deliveries/s: counted up to the end of the window, before the queues drain
        deliveries = sum(r["deliveries"] for r in results)
        figures["deliveries_per_s"] = round(deliveries / elapsed)
    elif scenario == "ping-pong":
        figures["says"] = sum(r["says"] for r in results)
        figures["says_per_s"] = round(figures["says"] / elapsed)
        if all("expected" in r for r in results):  # the C load's receivers count theirs
            expected = sum(r["expected"] for r in results)
            delivered = sum(r["delivered"] for r in results)
            figures.update({"expected": expected, "delivered": delivered, "lost": expected - delivered})
    elif scenario == "idle":
        sessions = sum(r["sessions"] for r in results)
        figures.update({"sessions": sessions, "alive": sum(r["alive"] for r in results),
                        "register_s": round(max(r["setup_s"] for r in results), 3),
                        # a load near its core for the whole registration measured itself
                        "register_load_cpu_pct": round(max(100 * r["setup_cpu_s"] / max(r["setup_s"], 1e-9)
                                                           for r in results), 1),
                        # at the end of the hold: what idle sessions cost, once settled
                        "rss_per_session_kib": round((rss_after - rss_before) / max(1, sessions) / 1024, 2)})
    return figures
