"""ClusterServer: a chat server that is one node of a cluster sharing a Redis backplane.

Strategy: every change to shared state (a nick, a membership, a message) is a script
on the backplane, which publishes what it did on the event channel; every node, this
one included, applies the channel's records in the order Redis sent them. So each
room's events have one order on every node (PROTOCOL.md 6, guarantee 1), and a node
answers its own clients from its own records:

- say: says are batched; one script per batch assigns each message its seq, stores it
  in the room's stream, and publishes it. When this node receives a message with one
  of its tags, it has just delivered it to its local members, the sender among them,
  so it sends the sender's ok then (the msg before the ok, guarantee 2).
- join: the script adds the member, publishes `presence join` tagged for the joiner,
  and returns the members and history as of that point (seq S). When the tagged record
  arrives, the joiner is held: events after it are kept for it, and sent after the
  join's ok, so history up to S followed by the live msgs from S+1 has no gap.
- a session that ends is removed by a script run from its own greenlet, since a
  session may end inside the hub (a slow consumer), where nothing may block.

While Redis is unreachable, requests that need it fail with `unavailable`; sessions
that end meanwhile are removed from Redis when it is back (the backplane's resync
sends their presence quit), and each room's messages stored meanwhile by other nodes
are caught up from the room's stream.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar, cast

import gevent
from gevent.event import AsyncResult, Event

from ..core import RoomMaster, Session
from ..errors import BackplaneError, ConfigError, RequestError
from ..irc.codec import parse_tags, render_tags
from ..protocol import bye, encode, nick_key
from .backplane import SESSIONS_PER_NODE, RedisBackplane
from .chat import ChatRoom, ChatServer
from .config import Settings
from .eventlog import EventLog
from .events import ChatEvent, RoomView, Topic, msg_fields
from .publish import Batch, consecutive_runs
from .records import BadRecord, Msg, Presence, Refusal, RoomChange, Whisper, parse_records

if TYPE_CHECKING:
    from .member import ChatMember

__all__ = ["ClusterServer"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_BYE_KICKED = bye("kicked")
_SAY_FAILED = ("the cluster is unavailable: this message was not acknowledged and may not "
               "have reached the room; try again")


_REFUSALS = {"not_in_room": "you are not in {room}",
             "moderated": "{room} is moderated: only its operators and voiced members may speak"}
_REFUSED = {-1: ("not_in_room", "you are not in {room}"),
            0: ("not_operator", "you are not an operator of {room}"),
            -2: ("no_such_nick", "nobody called {nick} is in {room}")}


def _refused(result: int, room: str, nick: str = "") -> RequestError:
    """A script's refusal (-1, 0, -2) as the request's error."""
    code, message = _REFUSED[result]
    return RequestError(code, message.format(room=room, nick=nick[:80]))


class ClusterRoom(ChatRoom):
    """A room with local members; `joining` holds, per joining session id, the
    events that arrived between its join and the join's ok. `roster` is every member
    in the cluster (session id -> nick) as this node's members were told; until the
    first join's snapshot sets it, presence changes wait in `_roster_log`."""

    def __init__(self, name: str, seq: int = 0) -> None:
        super().__init__(name, seq)
        self.joining: dict[int, tuple[ChatMember, list[ChatEvent]]] = {}
        self.roster: dict[int, str] | None = None
        self._roster_log: list[tuple[int, str | None]] = []

    def change_roster(self, session_id: int, nick: str | None) -> bool:
        """Record that `session_id` is now called `nick` (None: it left); False if
        the roster already said so, so members were told already."""
        if self.roster is None:
            self._roster_log.append((session_id, nick))
            return True
        if self.roster.get(session_id) == nick:
            return False
        if nick is None:
            del self.roster[session_id]
        else:
            self.roster[session_id] = nick
        return True

    def start_roster(self, snapshot: dict[int, str]) -> None:
        """Set the roster from a snapshot taken at the first local join, then replay
        what changed since, in order (each change is idempotent)."""
        if self.roster is None:
            self.roster = dict(snapshot)
            for session_id, nick in self._roster_log:
                self.change_roster(session_id, nick)
            self._roster_log = []

    def hold(self, event: ChatEvent, exclude: int = 0) -> None:
        for session_id, (_, held) in self.joining.items():
            if session_id != exclude:
                held.append(event)

    def admit(self, session: ChatMember) -> None:
        """The join's ok was sent: make `session` a member and send what was held."""
        entry = self.joining.pop(session.session_id, None)
        if entry is None:
            return  # it left meanwhile
        self.enter(session)
        for event in entry[1]:
            session.send(session.render(event))


# (room, tag, IRC client tags, frame head, frame tail, sender's session): the say
# script's arguments for one message
SayArgs = tuple[str, str, str, bytes, bytes, int]


class _SayBatch(Batch[SayArgs]):
    __slots__ = ("waiting",)

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0  # messages not yet back from the channel


class ClusterServer(ChatServer):
    """A chat server whose rooms, nicks and history are shared through Redis."""

    def __init__(self, settings: Settings) -> None:
        assert settings.backplane is not None
        self.backplane = RedisBackplane(
            settings.backplane, settings.node_timeout, settings.history_max,
            settings.max_history_rooms,
            on_payload=self._apply, state=self._state, on_resync=self._resynced)
        super().__init__(settings)
        self.rooms: RoomMaster[ClusterRoom] = RoomMaster(  # type: ignore[assignment]
            self._new_room, keep_empty=lambda room: bool(room.joining))
        self._echo_timeout = max(2.0, settings.node_timeout)
        self._tags = itertools.count(1)
        self._says: dict[str, tuple[ChatMember, int | str | None, _SayBatch]] = {}
        self._joins: dict[str, tuple[ChatMember, AsyncResult[ClusterRoom]]] = {}
        self._echoes: dict[str, Event] = {}  # tag -> set when its room event is back
        self._open = _SayBatch()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._committer: gevent.Greenlet | None = None
        self._committing_batch: _SayBatch | None = None
        self._payloads = 0  # payloads applied: a quit's or rename's records share one

    # -- lifecycle (ChatServer's hooks) ----------------------------------------------

    def _session_ids(self) -> Iterator[int]:
        # Evaluated lazily: the node id is known once start() has joined the cluster.
        return (self.backplane.node * SESSIONS_PER_NODE + n for n in itertools.count(1))

    def _open_state(self) -> None:
        self.accounts.store = self.backplane
        try:
            self.backplane.start()
        except BackplaneError as exc:
            raise ConfigError(f"cannot join the cluster: {exc}") from exc

    def _start_publishing(self) -> None:
        self._committer = gevent.spawn(self._commit_says)

    def _drain(self, timeout: float) -> None:
        self._idle.wait(timeout)
        if self._committer is not None:
            self._committer.kill()

    def event_log(self) -> EventLog:
        return self.backplane

    def _close_state(self) -> None:
        self.accounts.close()
        self.backplane.stop()

    def _new_room(self, name: str) -> ClusterRoom:
        return ClusterRoom(name)

    def _tag(self) -> str:
        return f"{self.backplane.node}:{next(self._tags)}"

    def _local(self, session_id: int) -> ChatMember | None:
        for listener in self.listeners:
            session = listener.sessions.get(session_id)
            if session is not None:
                return session  # type: ignore[return-value]
        return None

    # -- registration -------------------------------------------------------------------

    def register(self, session: ChatMember, nick: str) -> None:
        self.check_owner(session, nick)
        key = nick.lower()
        if key in self.nicks or not self.backplane.claim(session.session_id, nick):
            raise RequestError("nick_taken", f"{nick} is taken")
        if not session.is_open:  # it went away while the nick was being claimed
            self._depart(session.session_id, nick, [])
            return
        if len(self.nicks) >= self.settings.max_clients:
            self._depart(session.session_id, nick, [])
            raise RequestError("server_full", "the server is full, try again later")
        self.nicks[key] = session
        session.nick = nick

    def unregister(self, session: ChatMember) -> None:
        nick = session.nick
        if nick is None:
            return
        if self.nicks.get(nick.lower()) is session:
            del self.nicks[nick.lower()]
        names = list(session.rooms)
        for room in session.rooms.values():
            self._forget_member(room, session)  # type: ignore[arg-type]
        session.rooms.clear()
        if not self.shutting_down:  # at shutdown the node leaves the cluster as a whole
            # This may run in the hub (a slow consumer is closed by the flusher).
            gevent.spawn(self._depart, session.session_id, nick, names, session.quit_reason)

    def _depart(self, session_id: int, nick: str, rooms: list[str],
                reason: str | None = None) -> None:
        try:
            self.backplane.unregister(session_id, nick, rooms, reason)
        except BackplaneError as exc:
            log.info("session %d left while the backplane was away (%s); resync will tell "
                     "the cluster", session_id, exc)

    def _forget_member(self, room: ClusterRoom, session: ChatMember) -> None:
        room.joining.pop(session.session_id, None)
        self.rooms.leave(room.name, session)

    def rename(self, session: ChatMember, nick: str) -> None:
        old = session.nick
        assert old is not None
        self.check_owner(session, nick)
        holder = self.nicks.get(nick.lower())
        if holder is not None and holder is not session:
            raise RequestError("nick_taken", f"{nick} is taken")
        result = self.backplane.rename(session.session_id, old, nick, list(session.rooms))
        if result == "taken":
            raise RequestError("nick_taken", f"{nick} is taken")
        if not session.is_open:
            return  # it ended meanwhile: its unregister frees whichever nick Redis holds
        if result == "gone":
            raise BackplaneError("the cluster does not know this session right now")
        if self.nicks.get(old.lower()) is session:
            del self.nicks[old.lower()]
        self.nicks[nick.lower()] = session
        session.nick = nick

    def _send_whisper(self, to: str, frame: ChatEvent, target: ChatMember | None) -> bool:
        if super()._send_whisper(to, frame, target):  # on this node
            return True
        key = nick_key(to)
        position = int((frame.msgid or "~0")[1:])
        tags = render_tags(frame.tags)[1:-1].decode() if frame.tags else ""
        return key is not None and self.backplane.whisper(key, frame.json[:-1], position, tags)

    # -- rooms ------------------------------------------------------------------------------

    def join(self, session: ChatMember, name: str, after: int | None,
             request_id: int | str | None, fold: bool = False) -> None:
        settings = self.settings
        assert session.nick is not None
        joined = session.rooms.get(name)
        if joined is not None:  # a rejoin: read the room as this node has delivered it
            snapshot = self._known(session, self.backplane.join(
                session.session_id, session.nick, name, "-", after, settings.max_recover,
                settings.history_on_join, rejoin_bound=joined.seq))
            if snapshot is not None:
                _, _, _, view, history, recovered = snapshot
                session.joined(request_id, name, view, history,
                               recovered if after is not None else None)
            return
        tag = self._tag()
        marker: AsyncResult[ClusterRoom] = AsyncResult()
        self._joins[tag] = (session, marker)
        try:
            snapshot = self._known(session, self.backplane.join(
                session.session_id, session.nick, name, tag, after, settings.max_recover,
                settings.history_on_join, fold=fold))
            if snapshot is None:
                return
            name, _, members, view, history, recovered = snapshot  # name: the room joined
            room = marker.get(timeout=self._echo_timeout)
            assert room is not None
        except gevent.Timeout:
            raise BackplaneError("the join was not confirmed by the cluster in time") from None
        finally:
            self._joins.pop(tag, None)
        room.start_roster(members)
        session.joined(request_id, name, view, history,
                       recovered if after is not None else None)
        room.admit(session)  # after the join's ok: what was held for it

    @staticmethod
    def _known(session: ChatMember, snapshot: T | None) -> T | None:
        """A script's result for `session`, or None if Redis no longer had the session:
        a no-op for a session that ended, an error for one that is live (its node was
        dropped from the cluster and has not resynced yet)."""
        if snapshot is None and session.is_open:
            raise BackplaneError("the cluster does not know this session right now")
        return snapshot

    def leave(self, session: ChatMember, room: ChatRoom, event: str,
              reason: str | None = None, occasion: int | None = None) -> None:
        self.backplane.leave(session.session_id, room.name, reason)
        self._forget_member(room, session)  # type: ignore[arg-type]

    def room_exists(self, name: str) -> bool:
        return self.backplane.room_exists(name)

    def find_folded(self, name: str) -> str | None:
        return self.backplane.find_folded(name)

    def room_list(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        rooms, more = self.backplane.rooms(after, limit)
        return [{"room": name, "members": count} for name, count in rooms], more

    def who(self, name: str) -> RoomView:
        return self.backplane.view(name)

    # Topics and operators: each a script that checks and changes Redis and publishes
    # the event; the request is answered once the event is back (told before the ok).

    def set_topic(self, session: ChatMember, room: ChatRoom, text: str) -> Topic | None:
        assert session.nick is not None
        now = int(time.time() * 1000)
        topic = Topic(text, session.nick, now) if text else None
        frame = encode({"op": "topic", "room": room.name, "topic": text, "from": session.nick,
                        "ts": now})[:-1]
        self._echoed(lambda tag: self.backplane.topic(session.session_id, room.name, topic,
                                                      frame, tag), room.name)
        return topic

    def kick(self, session: ChatMember, room: ChatRoom, nick: str, reason: str | None) -> str:
        extra = encode({"by": session.nick, **({"reason": reason} if reason else {})})
        result = self._echoed(lambda tag: self.backplane.kick(
            session.session_id, room.name, nick, b"," + extra[1:-2], tag), room.name, nick)
        assert isinstance(result, str)
        return result

    def set_mode(self, session: ChatMember, room: ChatRoom, change: str,
                 nick: str | None = None) -> None:
        assert session.nick is not None
        self._echoed(lambda tag: self.backplane.mode(
            session.session_id, room.name, change, nick or "", session.nick or "",
            int(time.time() * 1000), tag), room.name, nick or "")

    def _echoed(self, script: Callable[[str], T], room: str, nick: str = "") -> T:
        """Run `script` with a fresh tag; raise its refusal; else wait until its event
        is back from the channel (so this node's members, the caller among them, have
        been told)."""
        tag = self._tag()
        echo = self._echoes[tag] = Event()
        try:
            result = script(tag)
            if isinstance(result, int) and result in _REFUSED:
                raise _refused(result, room, nick)
            if result != 2 and not echo.wait(self._echo_timeout):  # 2: nothing changed
                raise BackplaneError("the change was not confirmed by the cluster in time")
            return result
        finally:
            self._echoes.pop(tag, None)

    def _history_source(self) -> RedisBackplane:
        return self.backplane

    # -- says ---------------------------------------------------------------------------------

    def publish(self, room: ChatRoom, sender: ChatMember, text: str,
                request_id: int | str | None, notice: bool = False,
                tags: dict[str, str] | None = None) -> Batch[SayArgs]:
        tag = self._tag()
        frame = encode(msg_fields(room.name, sender.nick, text, 0, notice))[:-1]
        cut = frame.rindex(b'"seq":0,"ts":') + 6  # the script puts the seq in between
        batch = self._open
        irc_tags = render_tags(tags).decode()[1:-1] if tags else ""  # as IRC writes them
        batch.messages.append((room.name, tag, irc_tags, frame[:cut], frame[cut + 1:],
                               sender.session_id))
        batch.waiting += 1
        self._says[tag] = (sender, request_id, batch)
        if len(batch.messages) == 1:
            self._idle.clear()
            self._wake.set()
        return batch

    def wait_for_says(self) -> None:
        # This node's says; another node's are ordered by the channel, not waited for.
        newest = self._open if self._open.messages else self._committing_batch
        if newest is not None:
            newest.done.wait(self._echo_timeout)

    def _commit_says(self) -> None:
        """One script per batch; its oks are sent as its records come back."""
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._open.messages:
                batch, self._open = self._open, _SayBatch()
                self._committing_batch = batch
                started = perf_counter()
                try:
                    self.backplane.say(batch.messages)
                    self.metrics.backplane_seconds.observe(perf_counter() - started)
                    self.metrics.batch_size.observe(len(batch.messages))
                except BackplaneError as exc:
                    log.warning("%d says failed: %s", len(batch.messages), exc)
                    self._fail(batch)
                    continue
                if not batch.done.wait(self._echo_timeout):
                    log.warning("says were stored but not echoed within %g s", self._echo_timeout)
                    self._fail(batch)
            self._committing_batch = None
            self._idle.set()

    def _fail(self, batch: _SayBatch) -> None:
        for _, tag, *_ in batch.messages:
            pending = self._says.pop(tag, None)
            if pending is not None:
                sender, request_id, _ = pending
                sender.say_failed(request_id, _SAY_FAILED)
        batch.done.set()

    # -- the event channel ----------------------------------------------------------------------

    def _apply(self, payload: bytes) -> None:
        """Apply one payload of the event channel (runs in the subscriber greenlet)."""
        try:
            records = parse_records(payload)
        except BadRecord as exc:
            log.error("ignored a malformed backplane payload: %s", exc)
            return
        self._payloads += 1
        for run in consecutive_runs(records, _msg_room, _msg_size, self.run_frames,
                                    self.run_bytes):
            if len(run) > 1 and self._apply_msg_run(cast(list[Msg], run)):  # only Msgs group
                self._pace()
                continue
            for record in run:
                self._apply_record(record)

    def _apply_record(self, record: Any) -> None:
        """Apply one record of a payload."""
        flusher = self._flusher
        if type(record) is Msg:
            flusher.delivering = True
            try:
                self._apply_msg(record.room, record.seq, record.tag, record.frame,
                                record.tags)
            finally:
                flusher.delivering = False
            self._pace()  # members that read keep up with a burst (publish.py)
        elif type(record) is Presence:
            self._apply_presence(record)
        elif type(record) is Refusal:
            self._apply_refusal(record)
        elif type(record) is RoomChange:
            room = self.rooms.get(record.room)
            if room is not None:
                event = ChatEvent(record.frame)
                room.broadcast(event)
                if room.joining:
                    room.hold(event)
            self._echo(record.tag)
        elif type(record) is Whisper:
            target = self._local(record.session)
            if target is not None and target.nick is not None:
                event = ChatEvent(record.frame)
                event.msgid = f"~{record.position}"
                if record.tags:
                    event.tags = parse_tags(record.tags)
                target.send(target.render(event))
                # Not in the channel reader's way: the log is written beside it.
                gevent.spawn(self.log_whisper, event, record.position, target.nick, None,
                             target)

    def _apply_msg(self, name: str, seq: int, tag: str, frame: bytes, tags: str = "") -> None:
        room = self.rooms.get(name)
        pending = self._says.pop(tag, None)  # one of this node's says: its sender is told last
        event = None
        if room is not None and seq > room.seq:
            room.seq = seq
            event = ChatEvent(frame)
            if tags:
                event.tags = parse_tags(tags)  # for IRC members that accept tags
            delivered = room.broadcast(event, exclude=pending[0] if pending is not None else None)
            self.metrics.deliveries.inc(delivered + (pending is not None))
            if room.joining:
                room.hold(event)
        if pending is not None:
            self._tell_sender(name, seq, event, pending)

    def _apply_msg_run(self, run: list[Msg]) -> bool:
        """Consecutive msgs of one room, as _apply_msg each, but queued to the room's
        members as one run (Room.broadcast_run): a local sender in the room is told
        (`said`) at its message's place, any other after the run. False, having done
        nothing, unless the room has members here and every msg is new to it. (A
        joiner holds each msg as it is delivered: none can start during a run, only
        while one bigger than a run's bound goes one by one, pacing between.)"""
        name = run[0].room
        room = self.rooms.get(name)
        if room is None or room.joining or run[0].seq <= room.seq or \
                any(later.seq <= earlier.seq for earlier, later in itertools.pairwise(run)):
            return False
        events: list[ChatEvent] = []
        exclude: list[ChatMember | None] = []
        in_place: list[Any] = []  # the pending say told at each event's place, or None
        after: list[tuple[Msg, Any, ChatEvent]] = []  # (record, pending, event) told after
        for record in run:
            pending = self._says.pop(record.tag, None)  # one of this node's says
            event = ChatEvent(record.frame)
            if record.tags:
                event.tags = parse_tags(record.tags)
            events.append(event)
            sender = pending[0] if pending is not None else None
            member = sender if sender is not None and \
                room.members.get(sender.session_id) is sender else None
            exclude.append(member)
            in_place.append(pending if member is not None else None)
            if pending is not None and member is None:
                after.append((record, pending, event))
        room.seq = run[-1].seq

        def told_in_place(member: Session, index: int) -> None:
            self._tell_sender(name, run[index].seq, events[index], in_place[index])

        def between(index: int) -> None:  # one by one: hold for joiners, then pace
            if room.joining:
                room.hold(events[index])
            self._pace()

        flusher = self._flusher
        flusher.delivering = True
        try:
            delivered = room.broadcast_run(events, exclude, told_in_place,
                                           max_bytes=self.run_bytes, between=between)
        finally:
            flusher.delivering = False
        self.metrics.deliveries.inc(delivered + sum(1 for p in in_place if p is not None)
                                    + len(after))
        for record, pending, event in after:
            self._tell_sender(name, record.seq, event, pending)
        return True

    def _tell_sender(self, name: str, seq: int, event: ChatEvent | None, pending: Any) -> None:
        """One of this node's says is delivered: its sender's `said`, and its batch."""
        sender, request_id, batch = pending
        self.metrics.says.inc()
        sender.said(name, seq, event, request_id)
        batch.waiting -= 1
        if batch.waiting == 0:
            batch.done.set()

    def _apply_refusal(self, record: Refusal) -> None:
        """One of this node's says was refused by the say script (its sender was kicked
        meanwhile, or the room is +m): answered here, in its place among the batch's oks."""
        pending = self._says.pop(record.tag, None)
        if pending is None:
            return  # another node's
        sender, request_id, batch = pending
        message = _REFUSALS.get(record.code, record.code).format(room=record.room)
        sender.say_refused(request_id, RequestError(record.code, message))
        batch.waiting -= 1
        if batch.waiting == 0:
            batch.done.set()

    def _apply_presence(self, record: Presence) -> None:
        room = self.rooms.get(record.room)
        if room is not None:
            presence = ChatEvent(record.frame, reason=record.reason)
            presence.actor = record.actor
            # One payload is one script's records: one quit or rename of an actor.
            presence.occasion = (record.actor, self._payloads)
            event = presence.fields
            gone = event["event"] in ("leave", "quit")
            if room.change_roster(record.actor, None if gone else event["nick"]) \
                    and not self.shutting_down:
                self._tell(room, presence, record.actor)
            # A local member's own leave: nothing after it reaches the member (its handler
            # then forgets it). Not a quit: a live session can be announced gone (its node
            # was judged dead) and then back, and must keep its rooms meanwhile.
            leaver = room.members.get(record.actor) if event["event"] == "leave" else None
            if leaver is not None and "by" in event:
                self._kicked(room, cast("ChatMember", leaver), event)
            elif leaver is not None:
                room.leave(leaver)
        if record.tag != "-":
            self._echo(record.tag)
        joining = self._joins.get(record.tag) if record.tag != "-" else None
        if joining is None:
            return
        session, marker = joining
        if not session.is_open:  # it ended while joining: undo the membership
            gevent.spawn(self._depart_room, session.session_id, record.room)
            marker.set_exception(BackplaneError("the session ended"))
            return
        room = self.rooms.get_or_create(record.room)
        if not room.members and not room.joining:
            room.seq = record.seq  # the first local member: deliver from here on
        room.joining[session.session_id] = (session, [])
        session.rooms[record.room] = room
        marker.set(room)

    def _kicked(self, room: ClusterRoom, member: ChatMember, presence: dict[str, Any]) -> None:
        """A local member was kicked: it is told so and is out of the room."""
        member.send(member.render(ChatEvent.of({
            "op": "kicked", "room": room.name, "by": presence["by"],
            **({"reason": presence["reason"]} if "reason" in presence else {})})))
        member.rooms.pop(room.name, None)
        self._forget_member(room, member)

    def _echo(self, tag: str) -> None:
        echo = self._echoes.get(tag)
        if echo is not None:
            echo.set()

    @staticmethod
    def _tell(room: ClusterRoom, frame: ChatEvent, actor: int) -> None:
        """A presence event to the room's local members but its actor."""
        room.broadcast(frame, exclude=room.members.get(actor))
        if room.joining:
            room.hold(frame, exclude=actor)

    def _depart_room(self, session_id: int, room: str) -> None:
        try:
            self.backplane.leave(session_id, room)
        except BackplaneError:
            pass  # resync removes it

    # -- reconnecting -----------------------------------------------------------------------------

    def _state(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        sessions: list[tuple[int, str]] = []
        memberships: list[tuple[int, str]] = []
        for session in self.nicks.values():
            assert session.nick is not None
            sessions.append((session.session_id, session.nick))
            memberships.extend((session.session_id, name) for name in session.rooms)
        return sessions, memberships

    def _resynced(self, conflicts: list[int], reconnected: bool) -> None:
        for session_id in conflicts:
            session = self._local(session_id)
            if session is not None:
                log.warning("session %d lost its nick to another node while the backplane "
                            "was away", session_id)
                session.close("kicked", _BYE_KICKED)
        if not reconnected:
            return
        for room in self.rooms:
            self._catch_up(room)

    def _catch_up(self, room: ClusterRoom) -> None:
        """After the channel was lost: tell the local members how the room's membership
        changed meanwhile (its presence events were missed), then deliver the messages
        other nodes stored meanwhile."""
        if room.roster is not None:
            now = self.backplane.members(room.name)
            changes: list[tuple[int, str | None, dict[str, str]]] = []
            for sid, known in list(room.roster.items()):
                if sid not in now:  # gone: left the room, or ended altogether
                    event = "leave" if self.backplane.holder(known) == sid else "quit"
                    changes.append((sid, None, {"nick": known, "event": event}))
            for sid, nick in now.items():
                old = room.roster.get(sid)
                if old is None:
                    changes.append((sid, nick, {"nick": nick, "event": "join"}))
                elif old != nick:
                    changes.append((sid, nick, {"nick": nick, "event": "rename", "old": old}))
            for sid, now_called, fields in changes:
                room.change_roster(sid, now_called)
                told = ChatEvent.of({"op": "presence", "room": room.name, **fields})
                told.actor = sid
                self._tell(room, told, sid)
        while True:
            missed = self.backplane.tags_after(room.name, room.seq, 500)
            for seq, tag, frame in missed:
                self._apply_msg(room.name, seq, tag, frame + b"\n")
            if len(missed) < 500:
                break

    def health(self) -> str | None:
        if self.shutting_down:
            return "shutting down"
        return self.backplane.check()

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "node": self.backplane.node}


def _msg_room(record: Any) -> str | None:
    """What runs group a payload's records by: a Msg's room (None: on its own)."""
    return record.room if type(record) is Msg else None


def _msg_size(record: Any) -> int:
    return len(record.frame) if type(record) is Msg else 0
