"""The load tests' own clients, light enough never to be the bottleneck of a soak, and
the report a soak prints however it ends.

A subscriber checks each msg as it arrives and keeps O(1) state: the last seq (a gap,
a duplicate or a reordering is counted at once), the count of deliveries, each
publisher's last counter (a publisher's texts are `say_text(index, 1)`, `(index, 2)`...
in the order it sent them) and a digest of (seq, text) pairs that must equal the digest
of what its room's publishers got acknowledged. A msg line is matched by a regex, not
JSON-decoded; other frames (replies, presence, ping, bye) are rare and decoded.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import signal
import sys
import time
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent
from gevent import socket as gsocket

from tests.rawclient import Client, Closed

ROOT = Path(__file__).resolve().parents[1]
REPLY_TIMEOUT = 30.0  # a say's ok; the slowest one is in the report
READ_PAUSE = 0.2  # seconds a subscriber lets lines gather once it has caught up
_MSG_PREFIX = b'{"op":"msg",'
# The fields of a msg line as the server encodes it (compact JSON, keys in this order);
# a string with an escape does not match, and the line is decoded instead.
_MSG = re.compile(rb'\{"op":"msg","room":"([^"\\]*)","from":"([^"\\]*)","text":"([^"\\]*)","seq":(\d+),')


def say_text(index: int, counter: int) -> str:
    """The text of publisher `index`'s `counter`-th say (its nick: f"pub{index}")."""
    return f"{index}:{counter}"


def expected_text(sender: bytes, counter: int) -> bytes:
    """say_text as a subscriber checks it: from the sender's nick, no parsing."""
    return b"%s:%d" % (sender[3:], counter)


def parse_msg(line: bytes) -> tuple[bytes, bytes, bytes, int]:
    """room, from, text (UTF-8) and seq of a msg line."""
    match = _MSG.match(line)
    if match:
        return match.group(1), match.group(2), match.group(3), int(match.group(4))
    frame = json.loads(line)
    return frame["room"].encode(), frame["from"].encode(), frame["text"].encode(), frame["seq"]


class LightClient:
    """A protocol client that costs little per frame: each msg line goes to `on_msg`
    as bytes; other frames are decoded, a ping is answered, a bye is noted."""

    def __init__(self, address: tuple[str, int], nick: str) -> None:
        self.sock = gsocket.create_connection(address, timeout=REPLY_TIMEOUT)
        self.sock.settimeout(None)  # reads wait as long as they must; requests have a timeout
        self.lines: deque[bytes] = deque()
        self.rest = b""
        self.small = False  # the last read was small: caught up
        self.ids = itertools.count(1)
        self.bye: str | None = None
        self.on_msg = self.ignore
        reply = self.request("hello", nick=nick)
        assert reply["op"] == "ok", reply

    @staticmethod
    def ignore(line: bytes) -> None:
        pass

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    def request(self, op: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a request; handle what arrives until its reply, and return that."""
        request_id = f"r{next(self.ids)}"
        self.send({"op": op, "id": request_id, **fields})
        with gevent.Timeout(timeout, AssertionError(f"no reply to {op} {request_id} in {timeout:g} s")):
            while True:
                frame = self.next_frame()
                if frame and frame.get("id") == request_id and frame.get("op") in ("ok", "error"):
                    return frame

    def next_frame(self, pause: float = 0.0) -> dict[str, Any] | None:
        """Handle the next line; return it decoded unless it was a msg (or blank).
        With `pause`, wait that long before reading again after a small read: lines
        gather in the socket, and one wakeup reads many (a reader that caught up
        costs a fraction of the CPU; one that is behind reads at once)."""
        while not self.lines:
            if pause and self.small:
                gevent.sleep(pause)
            data = self.sock.recv(65536)
            if not data:
                raise Closed("connection closed by the server")
            self.small = len(data) < 16384
            lines = (self.rest + data).split(b"\n")
            self.rest = lines.pop()
            self.lines.extend(lines)
        line = self.lines.popleft()
        if line.startswith(_MSG_PREFIX):
            self.on_msg(line)
            return None
        if not line.strip():
            return None
        frame = json.loads(line)
        if frame.get("op") == "ping":
            self.send({"op": "pong"})  # or the idle timeout ends a silent reader
        elif frame.get("op") == "bye":
            self.bye = frame.get("reason")
        return frame

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Ledger:
    """What a room's publishers got acknowledged: count, last seq, digest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.last = 0
        self.digest = 0

    def add(self, seq: int, text: bytes) -> None:
        self.count += 1
        self.last = max(self.last, seq)
        self.digest += hash((seq, text))


class Subscriber:
    """Joins a room and checks every msg as it reads it (see the module's docstring)."""

    def __init__(self, address: tuple[str, int], index: int, ledger: Ledger) -> None:
        self.index = index
        self.ledger = ledger
        self.room = ledger.name.encode()
        self.last = 0  # the highest seq received
        self.delivered = 0
        self.gaps = 0  # times a seq skipped ahead
        self.skipped = 0  # seqs skipped over
        self.disorder = 0  # a seq not above the last: a duplicate or a reordering
        self.bad = 0  # a msg of another room, or a text its publisher did not send next
        self.first_problem: str | None = None
        self.counters: dict[bytes, int] = {}  # publisher nick -> its last counter seen
        self.digest = 0
        self.ended: str | None = None  # why the reader stopped: a bye reason, closed, error
        self.client = LightClient(address, f"sub{index}")
        self.client.on_msg = self.on_msg
        reply = self.client.request("join", room=ledger.name)
        assert reply["op"] == "ok", reply
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                self.client.next_frame(READ_PAUSE)
        except (Closed, OSError) as exc:
            self.ended = self.client.bye or f"closed ({exc})"
        except Exception as exc:
            self.ended = f"error: {exc!r}"

    def on_msg(self, line: bytes) -> None:
        room, sender, text, seq = parse_msg(line)
        self.delivered += 1
        if seq != self.last + 1:
            if seq > self.last:
                self.gaps += 1
                self.skipped += seq - self.last - 1
            else:
                self.disorder += 1
            self._problem(f"seq {seq} after {self.last}")
        self.last = max(self.last, seq)
        counter = self.counters.get(sender, 0) + 1
        self.counters[sender] = counter
        if room != self.room or text != expected_text(sender, counter):
            self.bad += 1
            self._problem(f"seq {seq}: {line[:200]!r}, expected text {expected_text(sender, counter)!r}")
            if text.partition(b":")[2].isdigit():  # resync: one missing say counts once
                self.counters[sender] = int(text.partition(b":")[2])
        self.digest += hash((seq, text))

    def _problem(self, what: str) -> None:
        if self.first_problem is None:
            self.first_problem = what

    def kept_up(self) -> bool:
        """Still connected: no bye, no close, no error in its reader."""
        return self.ended is None

    def complete(self) -> bool:
        """Holds exactly every acknowledged say of its room, each with its text."""
        ledger = self.ledger
        return (self.last == ledger.last == ledger.count == self.delivered and self.digest == ledger.digest
                and not (self.gaps or self.disorder or self.bad))

    def behind(self) -> int:
        """Acknowledged says of its room it has not received yet."""
        return max(0, self.ledger.last - self.last)


class Publisher:
    """Says at `rate` per second until `deadline`, noting each ok in the room's ledger."""

    def __init__(self, address: tuple[str, int], index: int, ledger: Ledger) -> None:
        self.index = index
        self.ledger = ledger
        self.sent = 0
        self.slowest = 0.0  # the longest wait for an ok, seconds
        self.error: str | None = None
        self.client = LightClient(address, f"pub{index}")
        reply = self.client.request("join", room=ledger.name)
        assert reply["op"] == "ok", reply

    def run(self, rate: float, deadline: float) -> None:
        try:
            next_at = time.monotonic()
            while next_at < deadline:
                gevent.sleep(max(0.0, next_at - time.monotonic()))
                self.sent += 1
                text = say_text(self.index, self.sent)
                began = time.monotonic()
                reply = self.client.request("say", room=self.ledger.name, text=text)
                self.slowest = max(self.slowest, time.monotonic() - began)
                assert reply["op"] == "ok", reply
                self.ledger.add(reply["seq"], text.encode())
                next_at += 1 / rate
            self.client.request("quit")
            self.client.close()
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise


def server_state(process, probe_nick: str) -> str:
    """A server subprocess seen from outside: alive?, RSS, open files, its `stats`."""
    pid = process.proc.pid
    if process.proc.poll() is not None:
        return f"pid {pid} EXITED with {process.proc.returncode}"
    lines = [f"pid {pid}"]
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        cpu = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        lines.append(f"RSS {int(rss) / 1024:.1f} MiB, {fds} open files, "
                     f"CPU {(int(cpu[11]) + int(cpu[12])) / ticks:.1f} s")
    except (OSError, StopIteration, ValueError) as exc:
        lines.append(f"/proc unreadable: {exc}")
    if probe_nick:
        probe = None
        try:
            with gevent.Timeout(5, AssertionError("no stats reply in 5 s")):
                probe = Client(("127.0.0.1", process.port))
                probe.hello(probe_nick)
                reply = probe.request("stats")
            lines.append("stats " + json.dumps({k: v for k, v in reply.items() if k not in ("op", "id")}))
        except (AssertionError, OSError) as exc:
            lines.append(f"stats: none ({exc})")
        finally:
            if probe is not None:
                probe.close()
    return "; ".join(lines)


_DISCONNECTED = re.compile(r"disconnected from \S+ \((\w+)")


def log_summary(log: bytes, tail: int = 15) -> list[str]:
    """A server log in short: its disconnect reasons counted, its last lines that are
    not INFO (warnings, errors, tracebacks), and its last lines."""
    lines = log.decode(errors="replace").splitlines()
    reasons = Counter(m.group(1) for line in lines if (m := _DISCONNECTED.search(line)))
    other = [line for line in lines if " INFO " not in line]
    counted = ", ".join(f"{n} {why}" for why, n in reasons.most_common()) or "none"
    out = [f"disconnects by reason: {counted}"]
    out.append(f"{len(other)} lines not INFO" + (f", the last {min(20, len(other))}:" if other else ""))
    out.extend("  " + line for line in other[-20:])
    out.append(f"the last {min(tail, len(lines))} of {len(lines)} lines:")
    out.extend("  " + line for line in lines[-tail:])
    return out


class Soak:
    """One load run: its rooms, clients and servers, and the report of what it saw."""

    def __init__(self, name: str, servers: list, rooms: list[str], rate: float, seconds: float) -> None:
        self.name = name
        self.servers = servers  # ServerProcess objects
        self.ledgers = {room: Ledger(room) for room in rooms}
        self.rate = rate
        self.seconds = seconds
        self.subscribers: list[Subscriber] = []
        self.running: list[gevent.Greenlet] = []  # the publishers' greenlets
        self.publishers: list[Publisher] = []
        self.phase = "setup"
        self.began = time.monotonic()
        self.peak_behind = 0  # the most any subscriber was behind at a snapshot
        self.notes: list[str] = []  # lines the test adds to the report
        self._probes = itertools.count(1)

    def note(self, text: str) -> None:
        """A line for the report (printed with it)."""
        self.notes.append(text)

    def report(self, outcome: str, probe: bool = True) -> str:
        """Everything the run saw, as text (`probe`: also ask each server its stats)."""
        subs, pubs = self.subscribers, self.publishers
        acked = sum(ledger.count for ledger in self.ledgers.values())
        expected = sum(s.ledger.count for s in subs)
        received = sum(s.delivered for s in subs)
        up = [s for s in subs if s.kept_up()]
        lost = sum(s.ledger.count - s.delivered for s in up)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = [f"=== soak report: {self.name}: {outcome}",
               f"phase {self.phase}, {time.monotonic() - self.began:.1f} s since the start; "
               f"{len(pubs)} publishers at {self.rate * len(pubs):g} says/s in all for {self.seconds:g} s, "
               f"{len(subs)} subscribers in {len(self.ledgers)} rooms",
               f"says: {sum(p.sent for p in pubs)} sent, {acked} acknowledged; slowest ok "
               f"{max((p.slowest for p in pubs), default=0):.3f} s",
               f"deliveries: {expected} expected, {received} received; "
               f"{'lost' if self.phase in ('check', 'teardown') else 'not received yet'} {lost} "
               f"(expected - received, over the {len(up)} subscribers still connected)",
               f"gaps {sum(s.gaps for s in subs)} ({sum(s.skipped for s in subs)} seqs skipped), "
               f"duplicates or reorderings {sum(s.disorder for s in subs)}, wrong texts or rooms "
               f"{sum(s.bad for s in subs)}, incomplete {sum(not s.complete() for s in up)}",
               f"test process: CPU {usage.ru_utime + usage.ru_stime:.1f} s (user {usage.ru_utime:.1f}, "
               f"system {usage.ru_stime:.1f}), max RSS {usage.ru_maxrss / 1024:.0f} MiB"]
        for ledger in self.ledgers.values():
            members = [s for s in subs if s.ledger is ledger]
            short = sum(ledger.count - s.delivered for s in members)
            if short or ledger.count != ledger.last:
                out.append(f"  {ledger.name}: {ledger.count} acknowledged (last seq {ledger.last}), "
                           f"{len(members)} subscribers, {short} deliveries short")
        ended = Counter((s.ended or "").split(" (")[0] for s in subs if not s.kept_up())
        if ended:
            out.append("subscribers ended: " + ", ".join(f"{n} {why}" for why, n in ended.most_common()))
            for s in [s for s in subs if not s.kept_up()][:10]:
                out.append(f"  sub{s.index} ({s.ledger.name}): {s.ended}; received {s.delivered}, "
                           f"last seq {s.last} of {s.ledger.last}")
        behind = sorted((s for s in up if s.behind()), key=lambda s: -s.behind())
        out.append(f"behind now: {len(behind)} subscribers"
                   + (f", most {behind[0].behind()} msgs" if behind else "")
                   + f"; the most behind at any snapshot: {self.peak_behind} msgs")
        for s in behind[:10]:
            out.append(f"  sub{s.index} ({s.ledger.name}): last seq {s.last} of {s.ledger.last}")
        for s in [s for s in subs if s.first_problem][:10]:
            out.append(f"  sub{s.index} ({s.ledger.name}) first problem: {s.first_problem}")
        for p in [p for p in pubs if p.error][:10]:
            out.append(f"  pub{p.index} ({p.ledger.name}) failed: {p.error}")
        out.extend(self.notes)
        for number, process in enumerate(self.servers, 1):
            probe_nick = f"report{next(self._probes)}" if probe else ""
            out.append(f"server {number}: " + server_state(process, probe_nick))
            out.append(f"server {number} log:")
            out.extend("  " + line for line in log_summary(process.log))
        return "\n".join(out) + "\n"

    def problems(self) -> list[str]:
        """Each broken guarantee, one line each (empty: every subscriber has exactly
        every acknowledged say of its room, in seq order, with its text)."""
        out = [f"{ledger.name}: {ledger.count} says acknowledged, but the last seq is {ledger.last}"
               for ledger in self.ledgers.values() if ledger.count != ledger.last]
        for s in self.subscribers:
            if not s.kept_up():
                out.append(f"sub{s.index} ({s.ledger.name}) ended: {s.ended}, after {s.delivered} msgs")
            elif not s.complete():
                digest = "same" if s.digest == s.ledger.digest else "differs"
                out.append(f"sub{s.index} ({s.ledger.name}): {s.delivered} received up to seq {s.last} "
                           f"of {s.ledger.count} acknowledged; gaps {s.gaps}, duplicates or reorderings "
                           f"{s.disorder}, wrong {s.bad}, digest {digest}"
                           + (f"; first problem: {s.first_problem}" if s.first_problem else ""))
        out.extend(f"pub{p.index} failed: {p.error}" for p in self.publishers if p.error)
        return out

    def snapshot(self) -> None:
        """Note the peak lag; write the report so far (no probe: the server's session
        counts stay the test's)."""
        self.peak_behind = max([self.peak_behind] + [s.behind() for s in self.subscribers if s.kept_up()])
        self.path.write_text(self.report("running (a snapshot)", probe=False))

    def stop(self) -> None:
        """Kill the clients' greenlets and close their sockets."""
        gevent.killall(self.running + [s.reader for s in self.subscribers])
        for client in self.subscribers + self.publishers:
            client.client.close()

    @property
    def path(self) -> Path:
        return ROOT / "var" / f"soak-report-{self.name}.txt"


def wait_until(condition, timeout: float, message: str) -> None:
    with gevent.Timeout(timeout, AssertionError(message)):
        while not condition():
            gevent.sleep(0.05)


def load_and_check(soak: Soak, subscriber_at, publisher_at, subscribers: int, publishers: int,
                   rooms: int, drain: float = 60.0) -> None:
    """Subscribers then publishers join (`subscriber_at(index)`, `publisher_at(index)`:
    the address each uses); the publishers say for `soak.seconds`; then every
    subscriber must hold exactly every acknowledged say of its room."""
    ledgers = list(soak.ledgers.values())
    for index in range(subscribers):
        soak.subscribers.append(Subscriber(subscriber_at(index), index, ledgers[index % rooms]))
    for index in range(publishers):
        soak.publishers.append(Publisher(publisher_at(index), index, ledgers[index % rooms]))
    soak.phase = "load"
    deadline = time.monotonic() + soak.seconds
    soak.running = [gevent.spawn(p.run, soak.rate, deadline) for p in soak.publishers]
    gevent.joinall(soak.running, raise_error=True)
    soak.phase = "drain"
    wait_until(lambda: all(s.last >= s.ledger.last or not s.kept_up() for s in soak.subscribers), drain,
               f"not every acknowledged msg arrived within {drain:g} s")
    soak.phase = "check"
    problems = soak.problems()
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    acked = sum(ledger.count for ledger in ledgers)
    soak.note(f"{len(soak.servers)} server(s), {publishers} publishers, {subscribers} subscribers in {rooms} "
              f"rooms, {soak.seconds:g} s: {acked} says acknowledged; every subscriber kept up and "
              f"received all {sum(s.delivered for s in soak.subscribers)} deliveries owed to it, lost 0")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def reporting(soak: Soak, progress: float = 60.0):
    """Run a soak's body; on every way out (success, assertion, deadline, timeout,
    Ctrl-C, SIGTERM) print its report and write it to var/soak-report-NAME.txt, which
    is also rewritten every 10 s while it runs (in case the process is killed)."""
    soak.path.parent.mkdir(exist_ok=True)

    def keep_writing() -> None:
        last_progress = time.monotonic()
        while True:
            gevent.sleep(10)
            soak.snapshot()
            if time.monotonic() - last_progress >= progress:
                last_progress = time.monotonic()
                print(f"[soak {soak.name}] {soak.phase}, {last_progress - soak.began:.0f} s: "
                      f"{sum(ledger.count for ledger in soak.ledgers.values())} acknowledged, "
                      f"{sum(not s.kept_up() for s in soak.subscribers)} subscribers ended, "
                      f"at most {max([0] + [s.behind() for s in soak.subscribers])} msgs behind", flush=True)

    writer = gevent.spawn(keep_writing)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    outcome, interrupted = "passed", False
    try:
        yield soak
    except BaseException as exc:
        outcome = f"FAILED in phase {soak.phase}: {type(exc).__name__}: {exc}"
        interrupted = isinstance(exc, KeyboardInterrupt)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.kill(block=False)
        try:
            text = soak.report(outcome)
        except BaseException as exc:  # a report that fails says so, and the test's own error stays
            text = f"=== soak report: {soak.name}: {outcome}\nthe report itself failed: {exc!r}\n"
        soak.path.write_text(text)
        print("\n" + text + f"(also in {soak.path.relative_to(ROOT)})", flush=True)
        if interrupted and sys.stdout is not sys.__stdout__:  # captured: pytest would not show it
            print(text, file=sys.__stderr__, flush=True)
        soak.stop()
