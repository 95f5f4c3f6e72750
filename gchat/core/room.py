"""Rooms and the RoomMaster that holds them.

Strategy: a broadcast is one loop of non-blocking `Session.send` calls with the same
bytes object, so the frame is encoded once and no member can delay another: a member
that cannot keep up overflows its own queue and is dropped (PROTOCOL.md 6, guarantee
3). Nothing in a broadcast blocks, so greenlets see each room's events in one order
without locks. A RoomMaster is an ordinary object owned by a server, not a global.

Doors: members may speak different protocols. A room keeps its members grouped by
door (`Session.door`); a broadcast event that is not bytes is rendered by
`Session.render` once per door present, and that door's members get the same bytes
object in the plain loop. A rendering marked `Once` (IRC's QUIT and NICK) reaches a
session once however many of its rooms broadcast it.

Runs: when several events of one room are delivered in one step (a batch of says),
`broadcast_run` renders each once per door and joins them into one blob, which each
member's queue takes as one item: the cost per member is one append per run, not one
per event. A member whose queue would pass its high-water mark with the blob gets the
events one by one through `send` instead, which bounds and paces it exactly as
single broadcasts do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from .session import Session, send_run_to_each, send_to_each

__all__ = ["Once", "Room", "RoomMaster"]

R = TypeVar("R", bound="Room")


class Once(bytes):
    """A rendering each session takes once, whichever of its rooms broadcasts it:
    `key` names the event (a user's quit is one event in every room it was in), so it
    must differ between two events, even two that render alike."""

    key: object

    @classmethod
    def of(cls, data: bytes, key: object) -> Once:
        """`data` to send once per session for the event `key`."""
        once = cls(data)
        once.key = key
        return once


class Room:
    """A named set of sessions, in the order they entered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[int, Session] = {}
        self._groups: dict[str, dict[int, Session]] = {}  # door -> its members

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, session: object) -> bool:
        return isinstance(session, Session) and self.members.get(session.session_id) is session

    def enter(self, session: Session) -> None:
        """Add `session` to the room (a no-op if it is already a member)."""
        if self.members.get(session.session_id) is not session:
            self.members[session.session_id] = session
            self._groups.setdefault(session.door, {})[session.session_id] = session

    def leave(self, session: Session) -> None:
        """Remove `session` from the room (a no-op if it is not a member)."""
        if self.members.get(session.session_id) is session:
            del self.members[session.session_id]
            group = self._groups[session.door]
            del group[session.session_id]
            if not group:
                del self._groups[session.door]

    def broadcast(self, event: object, exclude: Session | None = None) -> int:
        """Queue `event` to every member but `exclude`: bytes as they are, anything
        else as each member's door renders it, once per door. Returns how many took it."""
        if type(event) is bytes:
            return send_to_each(self.members.values(), event, exclude)
        delivered = 0
        for group in self._groups.values():
            data = next(iter(group.values())).render(event)  # once for the whole door
            if type(data) is Once:
                delivered += self._send_once(group, data, exclude)
                continue
            delivered += send_to_each(group.values(), data, exclude)
        return delivered

    def broadcast_run(self, events: Sequence[object], exclude: Sequence[Session | None],
                      excluded: Callable[[Session, int], None], *, max_bytes: int,
                      between: Callable[[int], None] = lambda index: None) -> int:
        """Queue `events`, in order, to every member, as one blob per door (see the
        module docstring). `exclude[i]`, if a member, does not get `events[i]`:
        `excluded(member, i)` runs instead, at that point of the member's stream.
        A run is for few, small events: if a door's blob would pass `max_bytes`, the
        events go one at a time, to every member, with `between(i)` (pacing) after
        each. Returns how many events members took (excluded ones not counted). No
        event may render as Once: a run is for messages."""
        skipping = {member for member in exclude if member is not None}
        doors: list[tuple[dict[int, Session], list[bytes]]] = []
        for group in self._groups.values():
            first = next(iter(group.values()))
            frames = [event if type(event) is bytes else first.render(event) for event in events]
            doors.append((group, frames))
            if sum(map(len, frames)) > max_bytes:
                return self._broadcast_one_by_one(events, exclude, excluded, between)
        delivered = 0
        for group, frames in doors:

            def one_by_one(member: Session, frames: list[bytes] = frames) -> int:
                taken = 0
                for index, frame in enumerate(frames):
                    if exclude[index] is member:
                        excluded(member, index)
                    elif member.send(frame):
                        taken += 1
                return taken

            delivered += send_run_to_each(group.values(), frames, b"".join(frames),
                                          skipping, one_by_one)
        return delivered

    def _broadcast_one_by_one(self, events: Sequence[object], exclude: Sequence[Session | None],
                              excluded: Callable[[Session, int], None],
                              between: Callable[[int], None]) -> int:
        # As single broadcasts: each to the members of its moment (`between` may wait).
        delivered = 0
        for index, event in enumerate(events):
            skip = exclude[index]
            delivered += self.broadcast(event, exclude=skip)
            if skip is not None:
                excluded(skip, index)
            between(index)
        return delivered

    @staticmethod
    def _send_once(group: dict[int, Session], data: Once, exclude: Session | None) -> int:
        delivered = 0
        for member in group.values():
            if member is not exclude and member.last_once != data.key:
                member.last_once = data.key
                if member.send(data):
                    delivered += 1
        return delivered


class RoomMaster(Generic[R]):
    """Holds the rooms of one server, by name; `room_factory` makes a new room."""

    def __init__(self, room_factory: Callable[[str], R],
                 keep_empty: Callable[[R], bool] = lambda room: False,
                 on_forget: Callable[[R], None] = lambda room: None) -> None:
        self._rooms: dict[str, R] = {}
        self._room_factory = room_factory
        self._keep_empty = keep_empty
        self._on_forget = on_forget

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[R]:
        return iter(list(self._rooms.values()))

    def get(self, name: str) -> R | None:
        """The room called `name`, or None."""
        return self._rooms.get(name)

    def get_or_create(self, name: str) -> R:
        """The room called `name`, created if it does not exist."""
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = self._room_factory(name)
        return room

    def enter(self, name: str, session: Session) -> R:
        """Put `session` in the room `name`, creating the room if needed."""
        room = self.get_or_create(name)
        room.enter(session)
        return room

    def leave(self, name: str, session: Session) -> R | None:
        """Take `session` out of room `name`; forget the room once it is empty,
        unless `keep_empty` says to keep it."""
        room = self._rooms.get(name)
        if room is not None:
            room.leave(session)
            self.forget_if_empty(name)
        return room

    def forget_if_empty(self, name: str) -> None:
        """Forget room `name` if it has no members and `keep_empty` does not keep it."""
        room = self._rooms.get(name)
        if room is not None and not room.members and not self._keep_empty(room):
            del self._rooms[name]
            self._on_forget(room)
