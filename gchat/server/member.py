"""ChatMember: what the chat state knows of a session, whatever protocol it speaks.

Strategy: the state (ChatServer, a cluster node, the GroupCommit) keeps members in
nicks and rooms and tells them what happened through a few methods; each door (the
JSON lines of PROTOCOL.md, IRC) is a subclass that reads its own protocol, calls the
state's methods, and says what the state tells it in its own protocol. A new door is
one codec and one subclass; no state code changes.
"""

from __future__ import annotations

import ipaddress
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..core import Session
from ..errors import RequestError
from .accounts import Account
from .events import ChatEvent, RoomView
from .ratelimit import TokenBucket

if TYPE_CHECKING:
    from .chat import ChatRoom, ChatServer
    from .publish import Batch

__all__ = ["ChatMember"]


class ChatMember(Session):
    """A connection of any door: its nick (once registered), rooms and rate limit."""

    # What an IRC user told USER, AWAY and QUIT: class defaults, so that sessions of
    # other doors spend no memory on them (the nick stands in for the names).
    username: str | None = None
    realname: str | None = None
    away: str | None = None
    quit_reason: str | None = None  # shown on IRC only
    account: str | None = None  # the name of the account it is logged in as (accounts.py)
    account_id: str | None = None  # that account's Account.id

    # Slots for what every session sets: an idle session then has no __dict__ at all
    # (docs/benchmarks.md, idle); the class defaults above, once set, go in one.
    __slots__ = ("_says", "bucket", "nick", "pinged_for", "rooms", "server")

    def __init__(self, server: ChatServer) -> None:
        super().__init__(limits=server.session_limits)
        self.server = server
        self.nick: str | None = None
        self.rooms: dict[str, ChatRoom] = {}
        self.bucket = TokenBucket(server.settings.rate, server.settings.burst, monotonic())
        self.pinged_for = -1.0  # the last_activity a ping was sent for
        self._says: Batch[Any] | None = None  # the batch of this session's latest say

    @property
    def address(self) -> str:
        """What login attempts are limited by: the peer's IPv4 address, or the /64 of
        its IPv6 one (a host commonly has a whole /64)."""
        if not isinstance(self.peer, tuple):
            return "unknown"
        try:
            ip = ipaddress.ip_address(self.peer[0])
        except ValueError:
            return str(self.peer[0])
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def login(self, name: str, password: str) -> bool:
        """Log in as account `name` (accounts.py; raises RequestError); False if the
        session ended while the password was checked."""
        account = self.server.accounts.login(name, password, self.address)
        if not self.is_open:
            return False
        self.set_account(account)
        return True

    def set_account(self, account: Account | None) -> None:
        """Log in as `account` (None: log out), and tell whoever wants to know."""
        self.account = account.name if account is not None else None
        self.account_id = account.id if account is not None else None
        self.server.account_changed(self)

    def account_notify(self, member: ChatMember) -> None:
        """`member`, who shares a room with this one, logged in or out (IRC's
        account-notify); nothing by default."""

    def on_disconnected(self, reason: str) -> None:
        if reason == "slow_consumer":
            self.server.metrics.slow_consumers.inc()
        self.server.unregister(self)

    def wait_to_read(self) -> bool:
        """Before reading the peer's next request: wait while the queue is past half
        its bound (replies are not counted against the bound, so a client that does
        not read must stop being read; docs/protocol.md). False if it ended meanwhile."""
        if self.queued_bytes >= self.high_water_bytes:
            self.reads_paused = True
            try:
                self.wait_drained()
            finally:
                self.reads_paused = False
        return self.is_open

    def _await_says(self) -> None:
        """Wait until this session's says are delivered and answered: its says are
        pipelined, every other request waits for them (PROTOCOL.md 6, guarantee 1)."""
        if self._says is not None:
            self._says.done.wait()
            self._says = None

    # -- what the state tells a member: each door says it in its protocol -------------

    def render(self, event: ChatEvent) -> bytes:
        """A msg, presence, whisper, topic, mode or kicked event, as this door's bytes
        (once per door)."""
        raise NotImplementedError

    def joined(self, request_id: int | str | None, room: str, view: RoomView,
               history: list[bytes], recovered: bool | None) -> None:
        """It is in `room` (or was already): what it sees of the room (members,
        operators, topic), and the history the join brings (`recovered` when the join
        asked to recover, else None)."""
        raise NotImplementedError

    def said(self, room: str, seq: int, event: ChatEvent | None,
             request_id: int | str | None) -> None:
        """Its say is stored and delivered to the others as message `seq`; `event` is
        the msg (None if it reached this session already)."""
        raise NotImplementedError

    def say_failed(self, request_id: int | str | None, message: str) -> None:
        """Its say was neither stored nor delivered."""
        raise NotImplementedError

    def say_refused(self, request_id: int | str | None, error: RequestError) -> None:
        """Its say was refused where it was stored (a cluster's say script: the sender
        was kicked meanwhile, or may not speak there); answered in its turn."""
        raise NotImplementedError

    def idle_ping(self) -> None:
        """Half the idle timeout has passed in silence: ask the peer for a sign of life."""
        raise NotImplementedError

    def farewell(self, reason: str) -> bytes:
        """The last frame before the server closes for `reason` (`bye` in PROTOCOL.md)."""
        raise NotImplementedError
