"""One load process: many client sessions as greenlets on the engine's Connector.

Strategy: the runner (runner.py) starts several of these and talks to each over
stdin/stdout, one JSON object per line: it sends the job, the process connects and
registers its share of the sessions and answers `ready`; on `go` it runs the measured
window and answers its counts. A server that cannot keep up (a session not set up in
time, or no reply in time) is a result, not a crash: the process answers `timed_out`
with how far it got. Clients that only need to count deliveries count LFs in the raw
stream (`on_data`), so a Python load process can keep up with a server that
delivers millions of lines a second; clients that measure latency parse their frames.
Latency is send to receive: the sender puts `time.monotonic_ns()` (one clock for every
process of the machine) at the start of the text.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Pool

from ..client.connection import ClientSession
from ..core import Connector
from ..errors import GchatError

__all__ = ["REPLY_TIMEOUT", "SETUP_TIMEOUT", "BenchSession", "run_job"]

_MSG = b'{"op":"msg"'

SETUP_TIMEOUT = 30.0  # seconds one session may take to connect, register and join
REPLY_TIMEOUT = 30.0  # seconds a request may wait for its reply while measuring


class BenchError(GchatError):
    """The server under test refused or dropped a benchmark client."""


class TooSlow(BenchError):
    """The server under test did not keep up: a result to report, not a failure."""


class SetupTimedOut(TooSlow):
    """A session was not set up within `timeout` s; `reached` of them were."""

    def __init__(self, reached: int, timeout: float) -> None:
        super().__init__(f"{reached} sessions set up, then one took over {timeout:g} s")
        self.reached, self.timeout = reached, timeout


class BenchSession(ClientSession):
    """The client's session, made cheap for load: a msg line goes to `on_msg` without
    being parsed, and with `counting` set the session only counts lines."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.lines = 0
        self.on_msg: Callable[[bytes], None] | None = None

    def on_data(self, data: bytes) -> None:
        if self.counting:
            self.lines += data.count(b"\n")
        else:
            super().on_data(data)

    def on_recv(self, line: bytes) -> None:
        if line.startswith(_MSG):
            if self.on_msg is not None:
                self.on_msg(line)
        else:
            super().on_recv(line)  # replies to their waiters; presence is dropped


def reply_of(waiter: AsyncResult, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The reply frame a `submit` waiter holds; TooSlow after `timeout` seconds."""
    try:
        return cast(dict[str, Any], waiter.get(timeout=timeout))
    except gevent.Timeout:
        raise TooSlow(f"no reply within {timeout:g} s") from None


def stamp(padding: int) -> str:
    """A say's text: the send time, padded to `padding` characters."""
    text = str(time.monotonic_ns())
    return text + " " + "x" * max(0, padding - len(text) - 1)


def sent_at(line: bytes) -> int:
    """The send time in a msg line whose text came from `stamp` (no JSON parse)."""
    start = line.index(b'"text":"') + 8
    return int(line[start:line.index(b" ", start)])


# -- connecting ---------------------------------------------------------------------------


def connect_all(host: str, ports: list[int], nicks: list[str], rooms: list[list[str]],
                concurrency: int = 200, offset: int = 0,
                timeout: float = SETUP_TIMEOUT) -> list[BenchSession]:
    """Connect, hello and join a session per nick (its rooms from `rooms`). With
    several ports (cluster nodes), session i goes to port i + `offset`, round robin.
    SetupTimedOut if a session is not set up within `timeout` seconds."""
    # The connector's own timeout is only a backstop: the timer in `one` fires first.
    connectors = [Connector(host, port, BenchSession, timeout=2 * timeout) for port in ports]
    sessions: list[BenchSession | None] = [None] * len(nicks)
    errors: list[Exception] = []
    late = Event()

    def one(index: int) -> None:
        # Failures are kept, not raised: a greenlet that dies prints its traceback.
        timer = gevent.Timeout(timeout)
        try:
            with timer:
                session = connectors[(index + offset) % len(connectors)].connect()
                assert isinstance(session, BenchSession)
                # Pipelined, as the protocol allows: one round trip registers and joins.
                waiters = [session.submit("hello", nick=nicks[index])]
                waiters += [session.submit("join", room=room) for room in rooms[index]]
                for op, waiter in zip(["hello"] + ["join"] * len(rooms[index]), waiters, strict=True):
                    reply = cast(dict[str, Any], waiter.get())
                    if reply["op"] != "ok":
                        raise BenchError(f"{op} failed: {reply.get('code')}: {reply.get('message')}")
                sessions[index] = session
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            late.set()
        except (GchatError, OSError) as exc:
            errors.append(exc)

    pool = Pool(concurrency)
    for index in range(len(nicks)):
        if errors or late.is_set():
            break  # the server failed or cannot keep up: start no more sessions
        pool.spawn(one, index)  # waits while `concurrency` are under way
    pool.join()
    # Every session or none: a missing subscriber would count as lost messages.
    if errors:
        raise errors[0]
    if late.is_set():
        raise SetupTimedOut(sum(session is not None for session in sessions), timeout)
    return cast(list[BenchSession], sessions)


# -- the scenarios: each sets up, then `measure(duration)` returns its counts ----------------


class Scenario:
    """One process's share of a scenario."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.host, self.ports = job["host"], job["ports"]
        self.index, self.procs = job["proc"], job["procs"]
        self.padding = job.get("padding", 64)
        self.setup_timeout = job.get("setup_timeout", SETUP_TIMEOUT)
        self.planned = 0  # sessions this process's setup makes (each setup says)
        self.set_up = 0  # of which set up so far: a timed-out setup reports it

    def mine(self, count: int) -> range:
        """The share of `count` items that belongs to this process."""
        return range(self.index, count, self.procs)

    def connect(self, nicks: list[str], rooms: list[list[str]], **options: Any) -> list[BenchSession]:
        """`connect_all` with the job's setup timeout, counting the sessions set up."""
        sessions = connect_all(self.host, self.ports, nicks, rooms, timeout=self.setup_timeout,
                               **options)
        self.set_up += len(sessions)
        return sessions

    def setup(self) -> None:
        raise NotImplementedError

    def measure(self, duration: float) -> dict[str, Any]:
        raise NotImplementedError


class FanOut(Scenario):
    """1 room, many subscribers, publishers with a window of unacknowledged says."""

    def setup(self) -> None:
        job = self.job
        subs = list(self.mine(job["subscribers"]))
        pubs = list(self.mine(job["publishers"]))
        self.planned = len(subs) + len(pubs)
        self.subscribers = self.connect([f"s{i}" for i in subs], [["fan"]] * len(subs))
        self.publishers = self.connect([f"p{i}" for i in pubs], [["fan"]] * len(pubs))
        for session in self.subscribers + self.publishers:
            session.counting = True  # publishers: their oks are counted by on_data below

    def measure(self, duration: float) -> dict[str, Any]:
        window = self.job["window"]
        for session in self.subscribers:
            session.lines = 0
        deadline = time.monotonic() + duration
        acked = [0]

        def publish(session: BenchSession) -> None:
            session.counting = False
            session.on_msg = None
            in_flight = [0]
            room = "fan"
            done = Event()

            def on_reply(_: Any) -> None:
                in_flight[0] -= 1
                acked[0] += 1
                if time.monotonic() < deadline and session.is_open:
                    in_flight[0] += 1
                    session.submit("say", room=room, text=stamp(self.padding)).rawlink(on_reply)
                elif in_flight[0] == 0:
                    done.set()

            for _ in range(window):
                in_flight[0] += 1
                session.submit("say", room=room, text=stamp(self.padding)).rawlink(on_reply)
            done.wait(duration + 30)

        started = time.monotonic()
        gevent.joinall([gevent.spawn(publish, s) for s in self.publishers])
        elapsed = time.monotonic() - started
        # Deliveries are counted up to the end of the window, not while the queues drain.
        delivered = sum(s.lines for s in self.subscribers)
        return {"deliveries": delivered, "says": acked[0], "elapsed": elapsed}


class ManyRooms(Scenario):
    """Many rooms with a few subscribers each; publishers at a fixed total rate."""

    def setup(self) -> None:
        job = self.job
        rooms, per_room, pubs = job["rooms"], job["subscribers_per_room"], job["publishers"]
        subs = list(self.mine(rooms * per_room))
        mine = list(self.mine(pubs))
        self.planned = len(subs) + len(mine)
        self.subscribers = self.connect([f"s{i}" for i in subs], [[f"room{i % rooms}"] for i in subs])
        self.pub_rooms = [[f"room{r}" for r in range(p, rooms, pubs)] for p in mine]
        self.publishers = self.connect([f"p{i}" for i in mine], self.pub_rooms)
        self.latencies: list[int] = []
        self.delivered = 0
        for session in self.subscribers:
            session.on_msg = self._on_msg
        for session in self.publishers:
            session.counting = True  # they need no msgs: only count, and read oks below

    def _on_msg(self, line: bytes) -> None:
        self.latencies.append(time.monotonic_ns() - sent_at(line))
        self.delivered += 1

    def measure(self, duration: float) -> dict[str, Any]:
        job = self.job
        rate = job["rate"] / job["publishers"]  # says per second per publisher
        acked: dict[str, int] = {}
        failed = [0]

        def publish(session: BenchSession, rooms: list[str]) -> None:
            session.counting = False
            interval = 1.0 / rate
            waiters = []
            next_at = time.monotonic() + random.random() * interval  # spread the starts
            end = time.monotonic() + duration
            turn = 0
            while next_at < end:
                gevent.sleep(max(0.0, next_at - time.monotonic()))
                room = rooms[turn % len(rooms)]
                waiters.append((room, session.submit("say", room=room, text=stamp(self.padding))))
                turn += 1
                next_at += interval
            for room, waiter in waiters:
                reply = reply_of(waiter)
                if reply["op"] == "ok":
                    acked[room] = acked.get(room, 0) + 1
                else:
                    failed[0] += 1

        started = time.monotonic()
        gevent.joinall([gevent.spawn(publish, session, rooms)
                        for session, rooms in zip(self.publishers, self.pub_rooms, strict=True)],
                       raise_error=True)  # a reply that never came: TooSlow
        elapsed = time.monotonic() - started
        return {"says": sum(acked.values()), "failed": failed[0], "elapsed": elapsed,
                "acked_rooms": acked}

    def finish(self, acked_rooms: dict[str, int], timeout: float = 10.0) -> dict[str, Any]:
        """Wait until every acknowledged say reached this process's subscribers of its
        room (or the timeout); the counts, with what was expected."""
        rooms = self.job["rooms"]
        expected = sum(acked_rooms.get(f"room{i % rooms}", 0)
                       for i in self.mine(rooms * self.job["subscribers_per_room"]))
        deadline = time.monotonic() + timeout
        while self.delivered < expected and time.monotonic() < deadline:
            gevent.sleep(0.01)
        return {"expected": expected, "delivered": self.delivered,
                "latencies_us": [x // 1000 for x in self.latencies]}


class PingPong(Scenario):
    """Rooms of two; one say in flight per publisher; the round trip to its ok."""

    def setup(self) -> None:
        mine = list(self.mine(self.job["rooms"]))
        names = [f"room{i}" for i in mine]
        self.planned = 2 * len(mine)
        self.publishers = self.connect([f"p{i}" for i in mine], [[n] for n in names])
        self.receivers = self.connect([f"r{i}" for i in mine], [[n] for n in names],
                                      offset=1)  # on a cluster, each pair spans two nodes
        for session in self.receivers:
            session.counting = True
        self.rtts: list[int] = []

    def measure(self, duration: float) -> dict[str, Any]:
        end = time.monotonic() + duration
        count = [0]

        def play(session: BenchSession, room: str) -> None:
            text = stamp(self.padding)
            while time.monotonic() < end and session.is_open:
                start = time.monotonic_ns()
                reply = reply_of(session.submit("say", room=room, text=text))
                if reply["op"] != "ok":
                    raise BenchError(f"say failed: {reply}")
                self.rtts.append(time.monotonic_ns() - start)
                count[0] += 1

        started = time.monotonic()
        players = [gevent.spawn(play, session, f"room{i}")
                   for session, i in zip(self.publishers, self.mine(self.job["rooms"]), strict=True)]
        gevent.joinall(players, raise_error=True)
        return {"says": count[0], "elapsed": time.monotonic() - started,
                "latencies_us": [x // 1000 for x in self.rtts]}


class Idle(Scenario):
    """Many registered, joined sessions held open; a probe pings meanwhile."""

    def setup(self) -> None:
        mine = list(self.mine(self.job["sessions"]))
        rooms = self.job["rooms"]
        self.planned = len(mine)
        started = time.monotonic()
        self.sessions = self.connect([f"i{i}" for i in mine], [[f"room{i % rooms}"] for i in mine],
                                     concurrency=500)
        self.setup_s = time.monotonic() - started

    def measure(self, duration: float) -> dict[str, Any]:
        rtts = []
        if self.index == 0:
            probe = connect_all(self.host, self.ports, ["probe"], [[]])[0]
            end = time.monotonic() + duration
            while time.monotonic() < end:
                start = time.monotonic_ns()
                reply_of(probe.submit("ping"))
                rtts.append((time.monotonic_ns() - start) // 1000)
                gevent.sleep(0.05)
        else:
            gevent.sleep(duration)
        alive = sum(1 for s in self.sessions if s.is_open)
        return {"sessions": len(self.sessions), "alive": alive, "setup_s": self.setup_s,
                "latencies_us": rtts}


SCENARIOS: dict[str, type[Scenario]] = {
    "fan-out": FanOut, "many-rooms": ManyRooms, "ping-pong": PingPong, "idle": Idle,
}


# -- the process side of the runner's line protocol -------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(stdin: Any, stdout: Any) -> None:
    """Serve one job from the runner: read it, set up, answer ready, measure on go."""

    def say(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message).encode() + b"\n")
        stdout.flush()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    job = json.loads(stdin.readline())
    scenario = SCENARIOS[job["scenario"]](job)
    # The load's own collections would slow its setup (which idle measures) and stall
    # its clients while measuring, posing as the server's latency: none at all, since
    # both phases are short and bounded; one after setup, whose survivors are frozen.
    gc.disable()
    setup_cpu = _cpu()
    try:
        scenario.setup()
    except SetupTimedOut as exc:
        say({"event": "timed_out", "phase": "setup", "sessions_set_up": scenario.set_up + exc.reached,
             "sessions": scenario.planned, "timeout_s": exc.timeout})
        return
    except (GchatError, OSError) as exc:
        say({"event": "failed", "error": str(exc)})
        return
    setup_cpu = _cpu() - setup_cpu
    gc.collect()
    gc.freeze()
    say({"event": "ready", "sessions": scenario.planned})
    command = json.loads(stdin.readline())
    cpu = _cpu()
    try:
        result = scenario.measure(command["duration"])
    except TooSlow as exc:
        say({"event": "timed_out", "phase": "measure", "error": str(exc)})
        return
    except (GchatError, OSError) as exc:
        say({"event": "failed", "error": str(exc)})
        return
    result["cpu_s"] = _cpu() - cpu
    result["setup_cpu_s"] = setup_cpu
    say({"event": "measured", **{k: v for k, v in result.items() if k != "latencies_us"}})
    if isinstance(scenario, ManyRooms):
        command = json.loads(stdin.readline())  # every process's acknowledged says
        result.update(scenario.finish(command["acked_rooms"]))
    say({"event": "result", **result})


def main() -> None:
    """`python -m gchat.bench.load`: serve one job on stdin/stdout."""
    from gevent.fileobject import FileObject

    stdin = FileObject(sys.stdin.fileno(), "rb", close=False)
    stdout = FileObject(sys.stdout.fileno(), "wb", close=False)
    run_job(stdin, stdout)
