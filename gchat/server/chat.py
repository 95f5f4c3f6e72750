"""ChatServer: the state one chat server shares between its sessions.

Strategy: plain dicts, touched only by greenlets of one hub, never across a blocking
call: registered nicks (keyed by ASCII-folded nick), the RoomMaster, the history store.
Every room event is encoded once and queued to each member with no blocking call in
between, so each room's events have one order (PROTOCOL.md 6, guarantee 1). A say's
message is stored, then broadcast, by the GroupCommit (publish.py).
One sweeper greenlet enforces the idle timeout for every connection.
A cluster node (cluster.py) is a ChatServer whose state methods (register, join,
leave, rename, whisper, who, history, publish, ...) go through Redis instead.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any, cast
from urllib.parse import urlsplit

import gevent
from gevent import ssl as gssl
from gevent.event import Event
from gevent.lock import Semaphore

from .. import __version__
from ..core import Flusher, Listener, Room, RoomMaster, Session, SessionLimits
from ..errors import BackplaneError, ConfigError, RequestError, StoreError
from ..irc.codec import line as irc_line
from ..protocol import bye, nick_key
from .accounts import Account, Accounts
from .config import Settings
from .eventlog import ROOM_STEP, EventLog, LogEntry, dm_key, dm_position, room_key
from .events import ChatEvent, RoomView, Topic, msg_fields
from .history import HistoryReader, HistoryStore, MemoryHistory
from .irc import IrcSession
from .member import ChatMember
from .metrics import Metrics
from .publish import Batch, GroupCommit, Pending, run_bounds
from .roomindex import RoomIndex
from .session import ChatSession
from .sqlite_store import SqliteHistory
from .web import HTTP_FULL, WebFiles, WebSession

__all__ = ["ChatRoom", "ChatServer"]

log = logging.getLogger(__name__)

_BYE_SHUTDOWN = bye("shutdown")
_BYE_FULL = bye("server_full")  # an extension: connections past --max-connections
_IRC_FULL = irc_line("ERROR", "Closing Link: Server is full")
_IRC_SHUTDOWN = irc_line("ERROR", "Closing Link: Server shutting down")


_MEMBER_MODES = {"o": "ops", "v": "voiced"}  # mode letter: the ChatRoom set it changes
_ROOM_MODES = {"t": "topic_locked", "m": "moderated"}  # mode letter: the ChatRoom flag
_OCCASIONS = itertools.count(1)  # one per quit or rename, shared by its rooms' events


def _presence(room: str, actor: ChatMember, event: str, irc_reason: str | None = None,
              occasion: int | None = None, **extra: str) -> ChatEvent:
    presence = ChatEvent.of({"op": "presence", "room": room, "nick": actor.nick, "event": event,
                             **extra})
    presence.reason = irc_reason
    presence.user = actor.username  # IRC shows it in prefixes
    presence.actor = actor.session_id
    presence.at = time.time()
    presence.occasion = occasion
    return presence


class ChatRoom(Room):
    """A room with its seq counters: `seq`, its newest delivered message, and
    `next_seq`, the newest assigned (ahead while says wait to be stored); its
    `topic` (stored) and its modes: whether only operators may set the topic
    (`topic_locked`, IRC's +t, on in a new room) and whether only operators and
    voiced members may speak (`moderated`, +m); its operators' session ids (`ops`:
    the member that created the room by joining it empty, and whom operators made
    so) and its voiced members' (`voiced`, +v)."""

    def __init__(self, name: str, seq: int = 0, topic: Topic | None = None) -> None:
        super().__init__(name)
        self.seq = seq
        self.next_seq = seq
        self.topic = topic
        self.topic_locked = True
        self.moderated = False
        self.ops: set[int] = set()
        self.voiced: set[int] = set()

    event_pos: int | None = None  # the position of its last logged event (eventlog.py)

    def nicks(self) -> list[str]:
        """Member nicks sorted by lower-cased nick (PROTOCOL.md 4)."""
        return sorted((m.nick for m in self.members.values()), key=str.lower)  # type: ignore[attr-defined]

    def view(self) -> RoomView:
        """The room as its members see it: members, operators, topic, modes."""
        return RoomView(self.nicks(), self._nicks_of(self.ops), self._nicks_of(self.voiced),
                        self.topic, self.topic_locked, self.moderated)

    def _nicks_of(self, session_ids: set[int]) -> list[str]:
        return sorted((m.nick for sid, m in self.members.items() if sid in session_ids),  # type: ignore[attr-defined]
                      key=str.lower)

    def may_speak(self, session_id: int) -> bool:
        """Whether the member may say something (+m: operators and voiced only)."""
        return not self.moderated or session_id in self.ops or session_id in self.voiced

    def drop_status(self, session_id: int) -> None:
        """A member left: it is no longer an operator nor voiced."""
        self.ops.discard(session_id)
        self.voiced.discard(session_id)


class ChatServer:
    """A chat server: listeners, sessions, rooms and history, per `settings`."""

    name = f"gchat/{__version__}"

    def __init__(self, settings: Settings, *, store: HistoryStore | None = None) -> None:
        self.settings = settings
        self._given_store = store
        self.store: HistoryStore = MemoryHistory(settings.history_max)  # replaced by start()
        self.accounts = Accounts(self.store, settings.registration, settings.password_min_length)
        self.commits: GroupCommit | None = None
        # An empty room is forgotten unless says wait to be stored; it is recreated from
        # the store's last seq (PROTOCOL.md 4: seq never restarts while history is kept).
        self.rooms: RoomMaster[ChatRoom] = RoomMaster(
            self._new_room, keep_empty=lambda room: room.next_seq != room.seq,
            on_forget=self._room_forgotten)
        # Every room that exists (members or history), sorted, for `rooms` pages.
        self.room_names = RoomIndex()
        self._trim = Event()  # wakes the trimmer: more rooms with history than allowed
        self._trimmer: gevent.Greenlet | None = None
        self.nicks: dict[str, ChatMember] = {}
        self.shutting_down = False
        self.session_limits = SessionLimits(
            max_frame=settings.max_frame, max_queue_bytes=settings.max_queue_bytes,
            max_queue_frames=settings.max_queue_frames, linger=settings.grace)
        # The most msgs, and bytes per door, delivered as one run (publish.py).
        self.run_frames, self.run_bytes = run_bounds(self.session_limits)
        self._flusher = Flusher.for_current_hub()
        self.irc_host = settings.irc_server_name  # asked once: it may look up the host name
        self.web_files = WebFiles()  # the page (gchat/server/web.py)
        self._origins = set(settings.origins)
        self._origin_hosts = {urlsplit(origin).hostname for origin in settings.origins}
        # Each door's listeners, and what their sessions get at shutdown (its bye; a
        # WebSession frames the JSON one, or drops it for a client still on HTTP).
        self.listeners: list[Listener] = []
        self._goodbyes: list[bytes] = []
        self._session_id_source = self._session_ids()
        json_session, irc_session, web_session = (self._new_session, self._new_irc_session,
                                                  self._new_web_session)
        self.doors: list[str] = []  # each listener's door, for the log
        self._listen("json", settings.port, json_session, _BYE_FULL, _BYE_SHUTDOWN)
        self._listen("json+tls", settings.tls_port, json_session, _BYE_FULL, _BYE_SHUTDOWN)
        self.irc_listener = self._listen("irc", settings.irc_port or None, irc_session,
                                         _IRC_FULL, _IRC_SHUTDOWN)
        self.irc_tls_listener = self._listen("irc+tls", settings.irc_tls_port, irc_session,
                                             _IRC_FULL, _IRC_SHUTDOWN)
        self.http_listener = self._listen("http", settings.http_port or None, web_session,
                                          HTTP_FULL, _BYE_SHUTDOWN)
        self.https_listener = self._listen("https", settings.https_port, web_session,
                                           HTTP_FULL, _BYE_SHUTDOWN)
        self.metrics = Metrics(self)  # after the listeners: its gauges read their sessions
        self._sweeper: gevent.Greenlet | None = None
        self._shutdown: gevent.Greenlet | None = None
        self._stopped = Event()
        self._topic_writes = Semaphore()  # stored and told in the order they were set

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the history store and start listening; raises StoreError when the store
        cannot be opened, ConfigError when a port cannot be bound."""
        self._open_state()
        started = []
        try:
            for listener in self.listeners:
                listener.start()
                started.append(listener)
        except ConfigError:
            for listener in started:
                listener.stop_accepting()
            self._close_state()
            raise
        self._start_publishing()
        if self.settings.idle_timeout > 0:
            self._sweeper = gevent.spawn(self._sweep_idle)

    def _open_state(self) -> None:
        self.store = self._given_store if self._given_store is not None else self._open_store()
        self.accounts.store = self.store
        self.room_names = RoomIndex(self.store.rooms())

    def _start_publishing(self) -> None:
        self.commits = GroupCommit(self.store, self._deliver, pace_limit=self.settings.pace_limit,
                                   deliver_run=self._deliver_run,
                                   run_bounds=(self.run_frames, self.run_bytes),
                                   failed=lambda room: self.rooms.forget_if_empty(room.name),
                                   committed=self.metrics.committed)
        self._trimmer = gevent.spawn(self._trim_history_rooms)
        if self.store.room_count() > self.settings.max_history_rooms:
            self._trim.set()  # the limit was lowered since the store was written

    def _drain(self, timeout: float) -> None:
        if self.commits is not None:
            self.commits.close(timeout)  # says already accepted are stored
        if self._trimmer is not None:
            self._trimmer.kill()

    def _close_state(self) -> None:
        self.accounts.close()
        self.store.close()

    def _session_ids(self) -> Iterator[int]:
        return itertools.count(1)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of each listener, the plain one first."""
        return [listener.address for listener in self.listeners]

    def shutdown(self) -> None:
        """Graceful shutdown (PROTOCOL.md 6, guarantee 5); returns once it is done."""
        self._begin_shutdown().join()

    def request_shutdown(self) -> None:
        """Begin shutdown without waiting (safe from a signal handler); a second
        request closes every connection at once."""
        if self._shutdown is not None:
            for session in self.sessions():
                session.disconnect("shutdown")
            return
        self._begin_shutdown()

    def _begin_shutdown(self) -> gevent.Greenlet:
        if self._shutdown is None:
            self._shutdown = gevent.spawn(self._graceful_stop)
        return self._shutdown

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server has shut down."""
        return self._stopped.wait(timeout)

    def _graceful_stop(self) -> None:
        log.info("shutting down: %d connections, grace %g s", len(list(self.sessions())),
                 self.settings.grace)
        self.shutting_down = True  # no presence from here on
        if self._sweeper is not None:
            self._sweeper.kill()
        gevent.joinall([gevent.spawn(listener.stop, self.settings.grace, goodbye)
                        for listener, goodbye in zip(self.listeners, self._goodbyes, strict=True)])
        self._drain(self.settings.grace)
        self._close_state()
        log.info("shut down")
        self._stopped.set()

    def _listen(self, door: str, port: int | None, factory: Callable[[], ChatMember],
                reject: bytes, goodbye: bytes) -> Listener | None:
        """A listener for `door` (TLS if its name says so) on `port` (None: off),
        sessions made by `factory`; `reject` past --max-connections, `goodbye` at
        shutdown."""
        if port is None:
            return None
        settings = self.settings
        tls = door.endswith("tls") or door == "https"
        listener = Listener(settings.host, port, factory, session_ids=self._session_id_source,
                            max_sessions=settings.connection_limit, reject=reject,
                            ssl_context=self._tls_context() if tls else None)
        self.listeners.append(listener)
        self.doors.append(door)
        self._goodbyes.append(goodbye)
        return listener

    def _tls_context(self) -> ssl.SSLContext:
        settings = self.settings
        assert settings.tls_cert and settings.tls_key  # Settings checks this
        context = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # gevent's: a handshake must not block
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate or key: {exc}") from exc
        return context

    def _open_store(self) -> HistoryStore:
        settings = self.settings
        if settings.store == "memory":
            return MemoryHistory(settings.history_max)
        return SqliteHistory(settings.store_path, settings.history_max, settings.store_sync)

    def _new_session(self) -> ChatMember:
        return ChatSession(self)

    def _new_irc_session(self) -> ChatMember:
        return IrcSession(self)

    def _new_web_session(self) -> ChatMember:
        return WebSession(self)

    def _new_room(self, name: str) -> ChatRoom:
        self.room_names.add(name)
        return ChatRoom(name, self.store.last_seq(name), self.store.topic(name))

    def _room_forgotten(self, room: ChatRoom) -> None:
        if self.store.last_seq(room.name) == 0:  # no members and no history: it is gone
            self.room_names.discard(room.name)
            # And so are its topic (or the one being written now, after that write) and
            # its logged events (eventlog.py): a room made again later starts afresh.
            if self.store.topic(room.name) is not None or self._topic_writes.locked() \
                    or room.event_pos:
                gevent.spawn(self._forget_room_state, room.name)  # this may run in the hub

    def _forget_room_state(self, name: str) -> None:
        with self._topic_writes:
            if self.rooms.get(name) is None and self.store.last_seq(name) == 0:
                try:
                    if self.store.topic(name) is not None:
                        self.store.set_topic(name, None)
                    self.store.log_forget(room_key(name))
                except StoreError as exc:
                    log.warning("could not forget the topic or events of %s: %s", name, exc)

    def sessions(self) -> Iterator[ChatMember]:
        """Every open connection, registered or not."""
        for listener in self.listeners:
            yield from cast(list[ChatMember], list(listener.sessions.values()))

    def _sweep_idle(self) -> None:
        # PROTOCOL.md 5, idle: one ping after idle_timeout/2 of silence, bye at idle_timeout.
        timeout = self.settings.idle_timeout
        interval = max(0.02, min(1.0, timeout / 20))
        while True:
            gevent.sleep(interval)
            try:
                self._close_idle(monotonic(), timeout)
            except Exception:
                log.exception("idle sweep failed")

    def _close_idle(self, now: float, timeout: float) -> None:
        for session in self.sessions():
            quiet = now - session.last_activity
            if quiet >= timeout:
                session.close("idle_timeout", session.farewell("idle_timeout"))
            elif quiet >= timeout / 2 and session.pinged_for != session.last_activity:
                session.pinged_for = session.last_activity
                session.idle_ping()

    # -- registration -----------------------------------------------------------------------

    def check_token(self, token: str | None) -> None:
        """Raise `unauthorized` unless `token` is what the server requires."""
        required = self.settings.token
        if required is None:
            return
        if token is None or not hmac.compare_digest(token.encode(), required.encode()):
            raise RequestError("unauthorized", "a valid token is required")

    def check_owner(self, session: ChatMember, nick: str) -> None:
        """Raise `account_required` if `nick` is an account `session` is not logged in as."""
        account = self.accounts.registered(nick)
        if account is not None and account.id != session.account_id:
            raise RequestError("account_required", f"{nick} is a registered nick: log in "
                               "with its password, or choose another nick")

    def register(self, session: ChatMember, nick: str) -> None:
        """Give `session` the nick; `account_required`, `nick_taken` or `server_full` if
        it cannot have it."""
        self.check_owner(session, nick)
        key = nick.lower()
        if key in self.nicks:
            raise RequestError("nick_taken", f"{nick} is taken")
        if len(self.nicks) >= self.settings.max_clients:
            raise RequestError("server_full", "the server is full, try again later")
        self.nicks[key] = session
        session.nick = nick

    def unregister(self, session: ChatMember) -> None:
        """A session ended: free its nick and leave its rooms, telling each room
        once with `presence quit`, unless the server is shutting down."""
        if session.nick is None:
            return
        if self.nicks.get(session.nick.lower()) is session:
            del self.nicks[session.nick.lower()]
        rooms = list(session.rooms.values())
        session.rooms.clear()
        occasion = next(_OCCASIONS)
        for room in rooms:
            self.leave(session, room, "quit", session.quit_reason, occasion)

    def find(self, nick: str) -> ChatMember | None:
        """The registered session called `nick`, compared ASCII-case-insensitively."""
        key = nick_key(nick)
        return self.nicks.get(key) if key is not None else None

    def whisper(self, sender: ChatMember, to: str, text: str, notice: bool = False,
                tags: dict[str, str] | None = None) -> ChatEvent:
        """Send a whisper to the session called `to`; `no_such_nick` if there is none.
        A `notice` (from IRC) is marked so (an extension field, docs/irc.md)."""
        fields: dict[str, Any] = {"op": "whisper", "from": sender.nick, "text": text,
                                  "ts": int(time.time() * 1000)}
        if notice:
            fields["notice"] = True
        frame = ChatEvent.of(fields)
        frame.tags = tags
        position = dm_position(fields["ts"])
        frame.msgid = f"~{position}"
        recipient = self.find(to)
        if not self._send_whisper(to, frame, recipient):
            raise RequestError("no_such_nick", f"nobody is called {to[:80]}")
        self.metrics.whispers.inc()
        named = recipient.nick if recipient is not None and recipient.nick else to
        self.log_whisper(frame, position, named, sender, recipient)
        return frame

    def log_whisper(self, frame: ChatEvent, position: int, to: str, sender: ChatMember | None,
                    recipient: ChatMember | None) -> None:
        """Keep a whisper (or a persisted TAGMSG) to `to` in the private log of each
        participant with an account that this server holds (a cluster node the other
        one's: each logs for its own); a store failure is logged, the whisper was
        delivered."""
        fields = frame.fields
        keys = []
        if sender is not None and sender.account_id is not None:
            keys.append(dm_key(sender.account_id, to))
        if recipient is not None and recipient.account_id is not None \
                and recipient is not sender:
            keys.append(dm_key(recipient.account_id, fields["from"]))
        if not keys:
            return  # guests only: nothing to encode or keep
        assert frame.msgid is not None
        logged = ChatEvent.of({**fields, "to": to}).json.rstrip(b"\n")
        entry = LogEntry(position, fields["ts"], frame.msgid, logged)
        self._log_events([(key, entry) for key in keys])

    def _log_events(self, entries: list[tuple[str, LogEntry]]) -> None:
        if entries:
            try:
                self.event_log().log_append(entries)
            except (StoreError, BackplaneError) as exc:
                log.warning("could not keep %d events for chathistory: %s", len(entries), exc)

    def account_changed(self, session: ChatMember) -> None:
        """`session` logged in or out: tell each member of its rooms once (IRC users
        that asked for account-notify)."""
        if session.nick is None:
            return
        told: set[int] = {session.session_id}
        for room in list(session.rooms.values()):
            for member in list(room.members.values()):
                if member.session_id not in told:
                    told.add(member.session_id)
                    member.account_notify(session)  # type: ignore[attr-defined]

    def account_dropped(self, account: Account) -> None:
        """`account` was deleted: every session of this server logged in as it is
        logged out (a nick registered again later is another account)."""
        for session in list(self.nicks.values()):
            if session.account_id == account.id:
                session.set_account(None)

    def event_log(self) -> EventLog:
        """Where private messages and room events are kept (eventlog.py)."""
        return self.store

    def log_room_event(self, room: ChatRoom, event: ChatEvent) -> None:
        """Give a room event other than a message (a topic, a persisted TAGMSG) its
        msgid, and keep it in the room's log for event-playback."""
        fields = event.fields
        key = room_key(room.name)
        if room.event_pos is None:
            try:
                room.event_pos = self.event_log().log_last(key) or 0
            except (StoreError, BackplaneError):
                return
        position = max(room.seq * ROOM_STEP, room.event_pos) + 1
        if position >= (room.seq + 1) * ROOM_STEP:
            return  # a thousand events since the last message: the rest are not logged
        room.event_pos = position
        event.msgid = f"{room.name}:{room.seq}.{position % ROOM_STEP}"
        self._log_events([(key, LogEntry(position, fields["ts"], event.msgid,
                                         event.json.rstrip(b"\n")))])

    def _send_whisper(self, to: str, frame: ChatEvent, target: ChatMember | None) -> bool:
        """Deliver `frame` to `target`, the session called `to` on this server (None:
        none is); whether someone got it."""
        if target is not None:
            target.send(target.render(frame))
        return target is not None

    def rename(self, session: ChatMember, nick: str) -> None:
        """Rename `session`; `nick_taken` if another session has the nick."""
        old = session.nick
        assert old is not None
        self.check_owner(session, nick)
        key = nick.lower()
        holder = self.nicks.get(key)
        if holder is not None and holder is not session:
            raise RequestError("nick_taken", f"{nick} is taken")
        del self.nicks[old.lower()]
        self.nicks[key] = session
        session.nick = nick
        occasion = next(_OCCASIONS)
        for room in session.rooms.values():
            room.broadcast(_presence(room.name, session, "rename", occasion=occasion, old=old),
                           exclude=session)

    # -- rooms ----------------------------------------------------------------------------------

    def join(self, session: ChatMember, name: str, after: int | None,
             request_id: int | str | None, fold: bool = False) -> None:
        """Put `session` in room `name` (telling the members already there) and tell it
        (`session.joined`) the members and history; a rejoin only tells it. Nothing
        yields between: the session hears of its join before any later event. With
        `fold` (an IRC channel), the room is the one `find_folded` gives, if any (a
        cluster node decides it in the join script itself)."""
        if fold:
            name = self.find_folded(name) or name
        room = session.rooms.get(name)
        if room is None:
            room = self.rooms.get_or_create(name)
            if room.members:
                room.broadcast(_presence(name, session, "join"))
            else:
                room.ops.add(session.session_id)  # who creates a room runs it (as on IRC)
            room.enter(session)
            session.rooms[name] = room
        history, recovered = self.history_for_join(room, after)
        session.joined(request_id, name, room.view(), history,
                       recovered if after is not None else None)

    def leave(self, session: ChatMember, room: ChatRoom, event: str,
              reason: str | None = None, occasion: int | None = None) -> None:
        """Take `session` out of `room`; tell the rest with presence `event` (and the
        IRC user's `reason`, which only IRC shows)."""
        room.drop_status(session.session_id)
        self.rooms.leave(room.name, session)
        if room.members and not self.shutting_down:
            room.broadcast(_presence(room.name, session, event, reason, occasion))

    # -- topics and operators (an extension: docs/protocol.md) ---------------------------

    def set_topic(self, session: ChatMember, room: ChatRoom, text: str) -> Topic | None:
        """Set (an empty `text`: clear) the topic of `room`, which `session` is in;
        `not_operator` if the room is +t and it is not an operator. Stored, then told
        to every member, the setter included; returns the topic."""
        self._check_operator(session, room, only_if=room.topic_locked)
        assert session.nick is not None
        now = int(time.time() * 1000)
        topic = Topic(text, session.nick, now) if text else None
        with self._topic_writes:
            if self.rooms.get(room.name) is not room or session not in room:
                raise RequestError("not_in_room", f"you are not in {room.name}")  # meanwhile
            self.store.set_topic(room.name, topic)
            current = self.rooms.get(room.name)  # the room may have been left and made again
            if current is not None:
                current.topic = topic
                event = ChatEvent.of({"op": "topic", "room": room.name, "topic": text,
                                      "from": session.nick, "ts": now})
                self.log_room_event(current, event)
                current.broadcast(event)
        return topic

    def kick(self, session: ChatMember, room: ChatRoom, nick: str, reason: str | None) -> str:
        """An operator takes the member called `nick` out of `room`: the others get a
        presence leave naming the operator (`by`), the member a `kicked` event.
        Returns the member's nick as written."""
        self._check_operator(session, room)
        target = self._member(room, nick)
        assert target.nick is not None and session.nick is not None
        extra = {"by": session.nick, **({"reason": reason} if reason else {})}
        kicked = ChatEvent.of({"op": "kicked", "room": room.name, **extra})
        target.send(target.render(kicked))
        room.drop_status(target.session_id)
        self.rooms.leave(room.name, target)
        target.rooms.pop(room.name, None)
        if room.members:
            room.broadcast(_presence(room.name, target, "leave", reason, None, **extra))
        return target.nick

    def set_mode(self, session: ChatMember, room: ChatRoom, change: str,
                 nick: str | None = None) -> None:
        """An operator changes `room`: `+o`/`-o` make the member `nick` an operator or
        not, `+v`/`-v` voiced or not; `+t`/`-t` let only operators (or anyone) set the
        topic, `+m`/`-m` only operators and voiced members (or anyone) speak. A change
        is told to every member, the operator included; one that changes nothing is not."""
        self._check_operator(session, room)
        fields: dict[str, Any] = {"op": "mode", "room": room.name, "change": change}
        on, letter = change[0] == "+", change[1]
        if letter in _MEMBER_MODES:
            assert nick is not None
            target = self._member(room, nick)
            holders: set[int] = getattr(room, _MEMBER_MODES[letter])
            if (target.session_id in holders) == on:
                return
            if on:
                holders.add(target.session_id)
            else:
                holders.discard(target.session_id)
            fields["nick"] = target.nick
        else:
            if getattr(room, _ROOM_MODES[letter]) == on:
                return
            setattr(room, _ROOM_MODES[letter], on)
        fields["from"] = session.nick
        self._tell_room(room, fields)

    @staticmethod
    def _tell_room(room: ChatRoom, fields: dict[str, Any]) -> None:
        fields.setdefault("ts", int(time.time() * 1000))
        room.broadcast(ChatEvent.of(fields))

    @staticmethod
    def _check_operator(session: ChatMember, room: ChatRoom, only_if: bool = True) -> None:
        if only_if and session.session_id not in room.ops:
            raise RequestError("not_operator", f"you are not an operator of {room.name}")

    def _member(self, room: ChatRoom, nick: str) -> ChatMember:
        target = self.find(nick)
        if target is None or target not in room:
            raise RequestError("no_such_nick", f"nobody called {nick[:80]} is in {room.name}")
        return target

    def find_folded(self, name: str) -> str | None:
        """The room an IRC user means by `name`: that room, or else the first (in code
        point order) whose name folds to it (CASEMAPPING=ascii); None if none does."""
        return self.room_names.find_folded(name)

    def room_exists(self, name: str) -> bool:
        """A room exists while it has members or stored history (PROTOCOL.md 3)."""
        return name in self.room_names

    def room_list(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of the rooms that exist, by name in code point order, with their
        member counts: up to `limit` named after `after`; and whether more follow."""
        names, more = self.room_names.page(after, limit)
        get = self.rooms.get
        return [{"room": name, "members": len(room) if (room := get(name)) else 0}
                for name in names], more

    def who(self, name: str) -> RoomView:
        """Room `name` as its members see it (members sorted by lower-cased nick)."""
        room = self.rooms.get(name)
        return room.view() if room else RoomView([], [], [], self.store.topic(name), True, False)

    def history(self, name: str, before: int | None, after: int | None,
                limit: int) -> list[bytes]:
        """The `history` op's messages of room `name`, oldest first (PROTOCOL.md 4)."""
        source = self._history_source()
        if after is not None:
            return source.after(name, after, limit)
        if before is not None:
            return source.before(name, before, limit)
        return source.latest(name, limit)

    def _history_source(self) -> HistoryReader:
        return self.store

    def history_for_join(self, room: ChatRoom, after: int | None) -> tuple[list[bytes], bool]:
        """The `history` of a join's ok and whether it `recovered` (PROTOCOL.md 4, 7)."""
        settings = self.settings
        if after is not None and after <= room.seq:
            missing = room.seq - after
            if missing == 0:
                return [], True
            if missing <= settings.max_recover and self.store.first_seq(room.name) <= after + 1:
                return self.store.after(room.name, after, missing), True
        # Up to the last delivered seq: a batch may be stored and half delivered (pacing).
        return self.store.before(room.name, room.seq + 1, settings.history_on_join), False

    def publish(self, room: ChatRoom, sender: ChatMember, text: str,
                request_id: int | str | None, notice: bool = False,
                tags: dict[str, str] | None = None) -> Batch[Any]:
        """Assign the next seq of `room` to `text` and queue it to be stored, then
        broadcast to the others, then told to the sender (`sender.said`); return the
        batch it is in. A `notice` (IRC's NOTICE) is marked so: an extension field."""
        assert self.commits is not None, "start() the server first"
        if not room.may_speak(sender.session_id):
            raise RequestError("moderated", f"{room.name} is moderated: only its operators "
                               "and voiced members may speak")
        seq = room.next_seq = room.next_seq + 1
        event = ChatEvent.of(msg_fields(room.name, sender.nick, text, seq, notice))
        event.tags = tags  # an IRC user's client-only tags, for IRC members (docs/irc.md)
        # PROTOCOL.md 6, guarantee 2: stored before anyone, the sender included, sees it.
        return self.commits.submit(room, seq, event, sender, request_id)

    def wait_for_says(self) -> None:
        """Wait until every say submitted so far has been delivered: what anyone sent
        before a client's PING reaches that client before its PONG (docs/irc.md)."""
        if self.commits is not None:
            self.commits.wait_delivered(timeout=10.0)

    def _deliver(self, room: ChatRoom, seq: int, event: ChatEvent, sender: ChatMember) -> None:
        room.seq = seq
        # The sender's door tells it next (said): one more delivery.
        self.metrics.deliveries.inc(room.broadcast(event, exclude=sender) + 1)
        if not room.members:  # its members left while the message was being stored
            self.rooms.forget_if_empty(room.name)
        if seq == 1 and self.store.room_count() > self.settings.max_history_rooms:
            self._trim.set()

    def _deliver_run(self, room: ChatRoom, run: list[Pending]) -> None:
        """Deliver consecutive messages of `room` as one run (Room.broadcast_run): what
        each member gets, in what order, is as if they were delivered one by one. A
        sender in the room is told (`said`: its msg, then its ok) at its message's
        place in its own stream; one that left meanwhile, after the run."""
        room.seq = run[-1][1]
        name, members = room.name, room.members
        exclude = [sender if members.get(sender.session_id) is sender else None
                   for _, _, _, sender, _ in run]

        def told_in_place(member: Session, index: int) -> None:
            _, seq, event, sender, request_id = run[index]
            sender.said(name, seq, event, request_id)

        delivered = room.broadcast_run([event for _, _, event, _, _ in run], exclude,
                                       told_in_place, max_bytes=self.run_bytes,
                                       between=lambda index: self._pace())
        for (_, seq, event, sender, request_id), here in zip(run, exclude, strict=True):
            if here is None:
                sender.said(name, seq, event, request_id)
        # As _deliver counts: the members that took each message, and its sender.
        self.metrics.deliveries.inc(delivered + len(run))
        if not room.members:
            self.rooms.forget_if_empty(name)
        if run[0][1] == 1 and self.store.room_count() > self.settings.max_history_rooms:
            self._trim.set()

    def _pace(self) -> None:
        """Between two messages delivered one by one: wait for members past their
        high-water marks, if any (Flusher.pace)."""
        self._flusher.pace(self.settings.pace_limit)

    def _trim_history_rooms(self) -> None:
        """Keep at most `max_history_rooms` rooms with history: forget the history of
        the least recently written rooms that have no members (docs/protocol.md)."""
        limit = self.settings.max_history_rooms
        while True:
            self._trim.wait()
            self._trim.clear()
            try:
                while (excess := self.store.room_count() - limit) > 0:
                    victims = [name for name in itertools.islice(
                        (name for name in self.store.rooms() if self.rooms.get(name) is None),
                        min(excess, 500))]
                    if not victims:
                        break  # every room with history has members
                    self.store.forget(victims)
                    for name in victims:  # unless joined, or written again, meanwhile
                        if self.rooms.get(name) is None and self.store.last_seq(name) == 0:
                            self.room_names.discard(name)
                    log.info("forgot the history of %d rooms (at most %d rooms keep history)",
                             len(victims), limit)
            except StoreError as exc:
                log.error("could not forget old rooms: %s", exc)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Whether a page from `origin` may open a WebSocket here: one of --http-origins,
        or the page's own origin (the request's Host, over http or https) when the Host
        names this server by an address or `localhost`. A DNS name must be listed: any
        site can point its own name at this server's address (DNS rebinding), and its
        pages would then be "same origin"."""
        origin = origin.rstrip("/")
        if origin in self._origins:
            return True
        if origin not in (f"http://{host}", f"https://{host}"):
            return False
        name = urlsplit(origin).hostname or ""
        if name == "localhost" or name in self._origin_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def health(self) -> str | None:
        """Why the server cannot serve now (shutting down, its store failing), or None."""
        if self.shutting_down:
            return "shutting down"
        return self.store.check()

    def stats(self) -> dict[str, int]:
        """Live counts: connections, registered sessions, rooms, queued output."""
        sessions = list(self.sessions())
        return {
            "sessions": len(sessions),
            "registered": len(self.nicks),
            "rooms": len(self.rooms),
            "queued_bytes": sum(s.queued_bytes for s in sessions),
            "queued_frames": sum(s.queued_frames for s in sessions),
        }
