"""One load process: many client sessions as greenlets on the engine's Connector.

Strategy: the runner (runner.py) starts several of these and talks to each over
stdin/stdout, one JSON object per line: it sends the job, the process connects and
registers its share of the sessions and answers `ready`; on `go` it runs the measured
window and answers its counts. A server that cannot keep up (a session not set up in
time, or no reply in time) is a result, not a crash: the process answers `timed_out`
with how far it got. Clients that only need to count deliveries count them in the raw
stream (`on_data`), so a Python load process can keep up with a server that
delivers millions of lines a second; clients that measure latency parse their frames.
Latency is send to receive: the sender puts `time.monotonic_ns()` (one clock for every
process of the machine) at the start of the text, then `sender:seq` (seq counts the
sender's says to that room from 1), so a subscriber also sees a gap or a reordering.

Transports: with `transport` "irc" in the job, the subscribers (fan-out, many-rooms),
the receivers (ping-pong) and every idle session, the probe included, are IRC clients
(`IrcBenchSession`: NICK/USER, JOIN, PONG to PING; the gchat server's IRC port); the
publishers stay JSON, so the publish path (say, its ok, the window) is the same in
both runs and only the subscribers' door differs. Counting clients of either door
count messages in the raw stream (`{"op":"msg"` or ` PRIVMSG `, also across reads).
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
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, TextMessage
from wsproto.events import Message as WsMessage
from wsproto.events import Request as WsRequest

from ..client.connection import CLIENT_LIMITS, ClientSession
from ..core import Connector, Session
from ..errors import GchatError
from ..irc.codec import TAGS_MAX, BadLine, IrcFramer, Message, line, parse

__all__ = ["REPLY_TIMEOUT", "SETUP_TIMEOUT", "TRANSPORTS", "BenchSession", "IrcBenchSession",
           "WsBenchSession", "run_job"]

TRANSPORTS = ("json", "irc", "ws")
_MSG = b'{"op":"msg"'
_PRIVMSG = b" PRIVMSG "
_PING = b"\nPING "  # a server's PING has no source or tags (gchat/server/irc.py)
_TAIL = max(len(_MSG), len(_PRIVMSG), len(_PING)) - 1

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


def count_across(pattern: bytes, tail: bytes, data: bytes) -> int:
    """How many times `pattern` occurs in the stream `data` continues, counting the
    occurrences that begin in `tail` (the stream's last bytes before `data`, at least
    len(pattern) - 1 of them when the stream has that many) and end in `data`."""
    width = len(pattern) - 1
    return data.count(pattern) + (tail[-width:] + data[:width]).count(pattern)


def next_tail(tail: bytes, data: bytes) -> bytes:
    """The stream's last `_TAIL` bytes once `data` is added to it."""
    return data[-_TAIL:] if len(data) >= _TAIL else (tail + data)[-_TAIL:]


class BenchSession(ClientSession):
    """The client's session, made cheap for load: a msg line goes to `on_msg` without
    being parsed, and with `counting` set the session only counts msg frames in the raw
    stream. `msgs` counts the msg frames either way."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.msgs = 0
        self._tail = b""
        self.on_msg: Callable[[bytes], None] | None = None

    def on_data(self, data: bytes) -> None:
        if self.counting:
            self.msgs += count_across(_MSG, self._tail, data)
            self._tail = next_tail(self._tail, data)
        else:
            self._tail = b""
            super().on_data(data)

    def on_recv(self, line: bytes) -> None:
        if line.startswith(_MSG):
            self.msgs += 1
            if self.on_msg is not None:
                self.on_msg(line)
        else:
            super().on_recv(line)  # replies to their waiters; presence is dropped

    @staticmethod
    def text_of(line: bytes) -> bytes:
        """The text of a msg line (a benchmark text: no quote, no escape in it)."""
        start = line.index(b'"text":"') + 8
        return line[start:line.index(b'"', start)]

    def set_up(self, nick: str, rooms: list[str]) -> list[AsyncResult]:
        """Pipelined, as the protocol allows: one round trip registers and joins."""
        return [self.submit("hello", nick=nick)] + [self.submit("join", room=room) for room in rooms]

    def ping(self) -> AsyncResult:
        """The `ping` request; the waiter gets its reply."""
        return self.submit("ping")


class WsBenchSession(BenchSession):
    """The JSON client over a WebSocket (gchat's /ws): the handshake goes first, each
    request is a masked text frame (wsproto), and replies are read from the server's
    frames. Counting needs no parsing: a server's frames are unmasked, so
    `{"op":"msg"` appears in the raw stream as it does over TCP."""

    def __init__(self) -> None:
        super().__init__()
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._early: list[bytes] | None = []  # requests made before the handshake's answer

    def on_connected(self) -> None:
        host = f"{self.peer[0]}:{self.peer[1]}" if isinstance(self.peer, tuple) else "gchat"
        Session.send(self, self._ws.send(WsRequest(host=host, target="/ws")))

    def send(self, data: bytes) -> bool:
        if self._early is not None:  # wsproto frames nothing before the 101
            self._early.append(data)
            return True
        return Session.send(self, self._ws.send(WsMessage(data=data.decode().rstrip("\n"))))

    def on_data(self, data: bytes) -> None:
        if self.counting:
            self.msgs += count_across(_MSG, self._tail, data)
            self._tail = next_tail(self._tail, data)
            return
        self._tail = b""
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, TextMessage) and event.message_finished:
                self.on_recv(event.data.encode())
            elif isinstance(event, AcceptConnection):
                early, self._early = self._early or [], None
                for data in early:
                    self.send(data)
            elif isinstance(event, (RejectConnection, CloseConnection)):
                self.disconnect("refused")


def channel_of(room: str) -> str:
    """The IRC channel of a gchat room (docs/irc.md): `#x` is `#x`, `x` is `&x`."""
    return room if room.startswith("#") else "&" + room


class IrcBenchSession(Session):
    """An IRC client for load, on the engine's Session: registers with NICK and USER
    (no CAP), joins its channels, answers PING with PONG. A PRIVMSG line goes to
    `on_msg` without being parsed; with `counting` set the session only counts the
    PRIVMSG lines in the raw stream (and still answers PINGs). `msgs` counts PRIVMSG
    lines either way. The replies that setup and `ping` wait for have the shape of
    the JSON client's (`{"op": "ok"}` or `{"op": "error", ...}`), so the scenarios
    treat both doors alike."""

    door = "irc"

    def __init__(self) -> None:
        super().__init__(limits=CLIENT_LIMITS)
        self.counting = False
        self.msgs = 0
        self.on_msg: Callable[[bytes], None] | None = None
        self.server_name = "*"  # the source of 001: what the server's PINGs carry
        self._tail = b"\n"  # the stream so far ends as if after a line
        self._irc = IrcFramer(max_tags=TAGS_MAX)
        self._setup: AsyncResult | None = None
        self._joins_left = 0
        self._pongs: dict[str, AsyncResult] = {}
        self._tokens = 0

    def on_data(self, data: bytes) -> None:
        if self.counting:
            self.msgs += count_across(_PRIVMSG, self._tail, data)
            pings = count_across(_PING, self._tail, data)
            self._tail = next_tail(self._tail, data)
            for _ in range(pings):  # gchat's PING carries its server name
                self.send(line("PONG", self.server_name))
            return
        self._tail = b"\n"
        for item in self._irc.feed(data):
            if isinstance(item, BadLine):
                continue
            if item[:1] == b":" and item.startswith(b"PRIVMSG ", item.find(b" ") + 1):
                self.msgs += 1  # the hot path: no parse
                if self.on_msg is not None:
                    self.on_msg(item)
                continue
            message = parse(item)
            if isinstance(message, Message):
                self._on_message(message)

    def _on_message(self, message: Message) -> None:
        command, params = message.command, message.params
        if command == "PING":
            self.send(line("PONG", *params[:1]))
        elif command == "PONG" and params:
            waiter = self._pongs.pop(params[-1], None)
            if waiter is not None:
                waiter.set({"op": "ok"})
        elif command == "001":
            self.server_name = message.source or "*"
            self._progress()
        elif command == "366":
            self._joins_left -= 1
            self._progress()
        elif command in ("ERROR", "432", "433", "451", "461", "464", "403", "405", "479"):
            self._fail(f"{command} {' '.join(params)}")

    def _progress(self) -> None:
        if self._setup is not None and self.server_name != "*" and self._joins_left <= 0:
            self._setup.set({"op": "ok"})
            self._setup = None

    def _fail(self, why: str) -> None:
        if self._setup is not None:
            self._setup.set({"op": "error", "code": "irc", "message": why})
            self._setup = None

    def on_disconnected(self, reason: str) -> None:
        self._fail(f"connection lost ({reason})")
        pongs, self._pongs = self._pongs, {}
        for waiter in pongs.values():
            waiter.set({"op": "error", "code": "disconnected", "message": reason})

    @staticmethod
    def text_of(line: bytes) -> bytes:
        """The text of a PRIVMSG line `:source PRIVMSG target :text` (no tags: the
        session asks for no capability)."""
        return line[line.index(b" :", 1) + 2:]

    def set_up(self, nick: str, rooms: list[str]) -> list[AsyncResult]:
        """NICK, USER and one JOIN for every room, pipelined; one waiter, set when 001
        and every JOIN's end of NAMES (366) have arrived, or at the first refusal."""
        self._setup = AsyncResult()
        self._joins_left = len(rooms)
        data = line("NICK", nick) + line("USER", nick, "0", "*", nick)
        if rooms:
            data += line("JOIN", ",".join(channel_of(room) for room in rooms))
        self.send(data)
        return [self._setup]

    def ping(self) -> AsyncResult:
        """PING with a fresh token; the waiter is set by its PONG."""
        self._tokens += 1
        token = f"bench{self._tokens}"
        waiter: AsyncResult = AsyncResult()
        self._pongs[token] = waiter
        self.send(line("PING", token))
        return waiter


AnySession = BenchSession | IrcBenchSession  # a WsBenchSession is a BenchSession


def reply_of(waiter: AsyncResult, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The reply frame a `submit` waiter holds; TooSlow after `timeout` seconds."""
    try:
        return cast(dict[str, Any], waiter.get(timeout=timeout))
    except gevent.Timeout:
        raise TooSlow(f"no reply within {timeout:g} s") from None


def stamp(padding: int, tag: str = "") -> str:
    """A say's text: the send time, then `tag` (`sender:seq`), padded to `padding`
    characters."""
    text = f"{time.monotonic_ns()} {tag}" if tag else str(time.monotonic_ns())
    return text + " " + "x" * max(0, padding - len(text) - 1)


def sent_at(text: bytes) -> int:
    """The send time in a text that came from `stamp`."""
    return int(text[:text.index(b" ")])


class Checker:
    """What one subscriber checks of the texts it receives: each sender's seq (from
    `stamp`'s tag) is the previous one plus 1, else a gap (something lost, repeated
    or out of order) is counted; `latencies` holds each send-to-receive time, ns."""

    __slots__ = ("gaps", "last", "latencies")

    def __init__(self, latencies: list[int]) -> None:
        self.last: dict[bytes, int] = {}
        self.gaps = 0
        self.latencies = latencies

    def check(self, text: bytes) -> None:
        now = time.monotonic_ns()
        space = text.index(b" ")
        tag = text[space + 1:text.index(b" ", space + 1)]
        sender, _, seq_text = tag.rpartition(b":")
        seq = int(seq_text)
        if seq != self.last.get(sender, 0) + 1:
            self.gaps += 1
        self.last[sender] = seq
        self.latencies.append(now - int(text[:space]))


# -- connecting ---------------------------------------------------------------------------


def connect_all(host: str, ports: list[int], nicks: list[str], rooms: list[list[str]],
                concurrency: int = 200, offset: int = 0,
                timeout: float = SETUP_TIMEOUT, transport: str = "json") -> list[AnySession]:
    """Connect, register and join a session per nick (its rooms from `rooms`), of the
    `transport`'s door (`ports` are that door's). With several ports (cluster nodes),
    session i goes to port i + `offset`, round robin. SetupTimedOut if a session is
    not set up within `timeout` seconds."""
    factory: type[AnySession] = BenchSession
    if transport == "irc":
        factory = IrcBenchSession
    elif transport == "ws":
        factory = WsBenchSession
    # The connector's own timeout is only a backstop: the timer in `one` fires first.
    connectors = [Connector(host, port, factory, timeout=2 * timeout) for port in ports]
    sessions: list[AnySession | None] = [None] * len(nicks)
    errors: list[Exception] = []
    late = Event()

    def one(index: int) -> None:
        # Failures are kept, not raised: a greenlet that dies prints its traceback.
        timer = gevent.Timeout(timeout)
        try:
            with timer:
                session = connectors[(index + offset) % len(connectors)].connect()
                assert isinstance(session, factory)
                waiters = session.set_up(nicks[index], rooms[index])
                for waiter in waiters:
                    reply = cast(dict[str, Any], waiter.get())
                    if reply["op"] != "ok":
                        raise BenchError(f"setting up {nicks[index]} failed: {reply.get('code')}: "
                                         f"{reply.get('message')}")
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
    return cast(list[AnySession], sessions)


# -- the scenarios: each sets up, then `measure(duration)` returns its counts ----------------


class Scenario:
    """One process's share of a scenario."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.host, self.ports = job["host"], job["ports"]
        self.transport = job.get("transport", "json")
        # The subscribers' door: the IRC or HTTP ports with transport "irc" or "ws"
        # (the publishers: JSON).
        self.sub_ports = job["door_ports"] if self.transport != "json" else self.ports
        self.index, self.procs = job["proc"], job["procs"]
        self.padding = job.get("padding", 64)
        self.setup_timeout = job.get("setup_timeout", SETUP_TIMEOUT)
        self.planned = 0  # sessions this process's setup makes (each setup says)
        self.set_up = 0  # of which set up so far: a timed-out setup reports it

    def mine(self, count: int) -> range:
        """The share of `count` items that belongs to this process."""
        return range(self.index, count, self.procs)

    def connect(self, nicks: list[str], rooms: list[list[str]], *, subscribers: bool = False,
                **options: Any) -> list[AnySession]:
        """`connect_all` with the job's setup timeout, counting the sessions set up;
        `subscribers` use the job's transport, the others JSON."""
        transport, ports = (self.transport, self.sub_ports) if subscribers else ("json", self.ports)
        sessions = connect_all(self.host, ports, nicks, rooms, timeout=self.setup_timeout,
                               transport=transport, **options)
        self.set_up += len(sessions)
        return sessions

    def setup(self) -> None:
        raise NotImplementedError

    def measure(self, duration: float) -> dict[str, Any]:
        raise NotImplementedError


def _publisher(session: AnySession) -> BenchSession:
    """A publisher: always a JSON session (the publish path is the same whatever the
    subscribers' transport)."""
    assert isinstance(session, BenchSession)
    return session


def _wait_delivered(sessions: list[AnySession], expected: int, timeout: float) -> int:
    """Wait until `sessions` have received `expected` messages in all (or the
    timeout); how many they have."""
    deadline = time.monotonic() + timeout
    delivered = sum(s.msgs for s in sessions)
    while delivered < expected and time.monotonic() < deadline:
        gevent.sleep(0.01)
        delivered = sum(s.msgs for s in sessions)
    return delivered


class FanOut(Scenario):
    """1 room, many subscribers, publishers with a window of unacknowledged says. The
    subscribers count messages in the raw stream; the first of each process's share
    checks every text instead (seq, latency), which costs this process little."""

    def setup(self) -> None:
        job = self.job
        subs = list(self.mine(job["subscribers"]))
        pubs = list(self.mine(job["publishers"]))
        self.planned = len(subs) + len(pubs)
        self.subscribers = self.connect([f"s{i}" for i in subs], [["fan"]] * len(subs),
                                        subscribers=True)
        self.pub_nicks = [f"p{i}" for i in pubs]
        self.publishers = [_publisher(s) for s in self.connect(self.pub_nicks, [["fan"]] * len(pubs))]
        self.latencies: list[int] = []
        self.checkers: list[Checker] = []
        for number, session in enumerate(self.subscribers):
            if number == 0:
                checker = Checker(self.latencies)
                self.checkers.append(checker)
                session.on_msg = lambda line, s=session, c=checker: c.check(s.text_of(line))
            else:
                session.counting = True
        for session in self.publishers:
            session.counting = True  # until they publish

    def measure(self, duration: float) -> dict[str, Any]:
        window = self.job["window"]
        for session in self.subscribers:
            session.msgs = 0
        deadline = time.monotonic() + duration
        acked = [0]
        failed = [0]

        def publish(session: BenchSession, nick: str) -> None:
            session.counting = False
            session.on_msg = None
            in_flight = [0]
            seq = [0]
            room = "fan"
            done = Event()

            def say() -> None:
                in_flight[0] += 1
                seq[0] += 1
                session.submit("say", room=room,
                               text=stamp(self.padding, f"{nick}:{seq[0]}")).rawlink(on_reply)

            def on_reply(result: AsyncResult) -> None:
                in_flight[0] -= 1
                if cast(dict[str, Any], result.value)["op"] == "ok":
                    acked[0] += 1
                else:
                    failed[0] += 1
                if time.monotonic() < deadline and session.is_open:
                    say()
                elif in_flight[0] == 0:
                    done.set()

            for _ in range(window):
                say()
            done.wait(duration + 30)

        started = time.monotonic()
        gevent.joinall([gevent.spawn(publish, session, nick)
                        for session, nick in zip(self.publishers, self.pub_nicks, strict=True)])
        elapsed = time.monotonic() - started
        # Deliveries are counted up to the end of the window, not while the queues drain.
        delivered = sum(s.msgs for s in self.subscribers)
        return {"deliveries": delivered, "says": acked[0], "failed": failed[0], "elapsed": elapsed,
                "acked_rooms": {"fan": acked[0]}}

    def finish(self, acked_rooms: dict[str, int], timeout: float = 10.0) -> dict[str, Any]:
        """Wait until every acknowledged say (of every process) reached every subscriber
        of this process (or the timeout); the counts, with what was expected."""
        expected = acked_rooms.get("fan", 0) * len(self.subscribers)
        delivered = _wait_delivered(self.subscribers, expected, timeout)
        return {"expected": expected, "delivered": delivered,
                "seq_gaps": sum(c.gaps for c in self.checkers),
                "latencies_us": [x // 1000 for x in self.latencies]}


class ManyRooms(Scenario):
    """Many rooms with a few subscribers each; publishers at a fixed total rate."""

    def setup(self) -> None:
        job = self.job
        rooms, per_room, pubs = job["rooms"], job["subscribers_per_room"], job["publishers"]
        subs = list(self.mine(rooms * per_room))
        mine = list(self.mine(pubs))
        self.planned = len(subs) + len(mine)
        self.subscribers = self.connect([f"s{i}" for i in subs], [[f"room{i % rooms}"] for i in subs],
                                        subscribers=True)
        self.pub_nicks = [f"p{i}" for i in mine]
        self.pub_rooms = [[f"room{r}" for r in range(p, rooms, pubs)] for p in mine]
        self.publishers = [_publisher(s) for s in self.connect(self.pub_nicks, self.pub_rooms)]
        self.latencies: list[int] = []
        self.checkers = [Checker(self.latencies) for _ in self.subscribers]
        for session, checker in zip(self.subscribers, self.checkers, strict=True):
            session.on_msg = lambda line, s=session, c=checker: c.check(s.text_of(line))
        for publisher in self.publishers:
            publisher.counting = True  # they need no msgs: only count, and read oks below

    def measure(self, duration: float) -> dict[str, Any]:
        job = self.job
        rate = job["rate"] / job["publishers"]  # says per second per publisher
        acked: dict[str, int] = {}
        failed = [0]

        def publish(session: BenchSession, nick: str, rooms: list[str]) -> None:
            session.counting = False
            interval = 1.0 / rate
            waiters = []
            seqs = dict.fromkeys(rooms, 0)  # each room has one publisher: its seq there
            next_at = time.monotonic() + random.random() * interval  # spread the starts
            end = time.monotonic() + duration
            turn = 0
            while next_at < end:
                gevent.sleep(max(0.0, next_at - time.monotonic()))
                room = rooms[turn % len(rooms)]
                seqs[room] += 1
                text = stamp(self.padding, f"{nick}:{seqs[room]}")
                waiters.append((room, session.submit("say", room=room, text=text)))
                turn += 1
                next_at += interval
            for room, waiter in waiters:
                reply = reply_of(waiter)
                if reply["op"] == "ok":
                    acked[room] = acked.get(room, 0) + 1
                else:
                    failed[0] += 1

        started = time.monotonic()
        gevent.joinall([gevent.spawn(publish, session, nick, rooms)
                        for session, nick, rooms in zip(self.publishers, self.pub_nicks,
                                                        self.pub_rooms, strict=True)],
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
        delivered = _wait_delivered(self.subscribers, expected, timeout)
        return {"expected": expected, "delivered": delivered,
                "seq_gaps": sum(c.gaps for c in self.checkers),
                "latencies_us": [x // 1000 for x in self.latencies]}


class PingPong(Scenario):
    """Rooms of two; one say in flight per publisher; the round trip to its ok."""

    def setup(self) -> None:
        mine = list(self.mine(self.job["rooms"]))
        names = [f"room{i}" for i in mine]
        self.planned = 2 * len(mine)
        self.publishers = [_publisher(s) for s in
                           self.connect([f"p{i}" for i in mine], [[n] for n in names])]
        self.receivers = self.connect([f"r{i}" for i in mine], [[n] for n in names],
                                      subscribers=True,
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
    """Many registered, joined sessions held open; a probe pings meanwhile. With the
    IRC transport every session is an IRC one, the probe too (PING, PONG)."""

    def setup(self) -> None:
        mine = list(self.mine(self.job["sessions"]))
        rooms = self.job["rooms"]
        self.planned = len(mine)
        started = time.monotonic()
        self.sessions = self.connect([f"i{i}" for i in mine], [[f"room{i % rooms}"] for i in mine],
                                     subscribers=True, concurrency=500)
        self.setup_s = time.monotonic() - started

    def measure(self, duration: float) -> dict[str, Any]:
        rtts = []
        started = time.monotonic()
        if self.index == 0:
            probe = connect_all(self.host, self.sub_ports, ["probe"], [[]],
                                transport=self.transport)[0]
            end = time.monotonic() + duration
            while time.monotonic() < end:
                start = time.monotonic_ns()
                reply = reply_of(probe.ping())
                if reply["op"] != "ok":
                    raise BenchError(f"ping failed: {reply}")
                rtts.append((time.monotonic_ns() - start) // 1000)
                gevent.sleep(0.05)
        else:
            gevent.sleep(duration)
        alive = sum(1 for s in self.sessions if s.is_open)
        # elapsed: the hold, which the runner divides the CPU figures by
        return {"sessions": len(self.sessions), "alive": alive, "setup_s": self.setup_s,
                "elapsed": time.monotonic() - started, "latencies_us": rtts}


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
    if isinstance(scenario, ManyRooms | FanOut):
        command = json.loads(stdin.readline())  # every process's acknowledged says
        result.update(scenario.finish(command["acked_rooms"]))
    say({"event": "result", **result})


def main() -> None:
    """`python -m gchat.bench.load`: serve one job on stdin/stdout."""
    from gevent.fileobject import FileObject

    stdin = FileObject(sys.stdin.fileno(), "rb", close=False)
    stdout = FileObject(sys.stdout.fileno(), "wb", close=False)
    run_job(stdin, stdout)
