"""Room and RoomMaster: one encoding for everyone, no member delays another."""

from __future__ import annotations

import gevent
from gevent import socket as gsocket

from gchat.core import Room, RoomMaster, Session, SessionLimits


class Member(Session):
    """A session with no socket: what it was sent stays in its queue."""

    def __init__(self, session_id: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.session_id = session_id

    @property
    def sent(self) -> list[bytes]:
        return self._queue  # a broadcast queues as send does (send_to_each)


def test_broadcast_queues_the_same_bytes_object_to_every_member_but_excluded():
    room = Room("r")
    members = [Member(i) for i in range(1, 4)]
    for member in members:
        room.enter(member)
    room.enter(members[0])  # entering twice changes nothing
    frame = b'{"op":"msg"}\n'
    room.broadcast(frame, exclude=members[1])
    assert members[0].sent[0] is frame and members[2].sent[0] is frame
    assert members[1].sent == []
    room.leave(members[0])
    assert members[0] not in room and len(room) == 2


class Shouter(Member):
    """A second door: renders an event in upper case, and counts its renders."""

    door = "shout"
    renders = 0

    def render(self, event: object) -> bytes:
        Shouter.renders += 1
        return str(event).upper().encode() + b"\n"


class Plain(Member):
    door = "plain"

    def render(self, event: object) -> bytes:
        return str(event).encode() + b"\n"


def two_doors(plain: int, shouters: int) -> tuple[Room, list[Plain], list[Shouter]]:
    """A room with `plain` members of one door, then `shouters` of the other."""
    room = Room("r")
    plains = [Plain(i) for i in range(1, plain + 1)]
    shouting = [Shouter(i) for i in range(plain + 1, plain + shouters + 1)]
    for member in plains + shouting:
        room.enter(member)
    Shouter.renders = 0
    return room, plains, shouting


def test_an_event_is_rendered_once_per_door_and_shared_by_its_members():
    room, plain, shouters = two_doors(3, 3)
    assert room.broadcast("hi", exclude=plain[0]) == 5
    assert Shouter.renders == 1
    assert plain[0].sent == [] and plain[1].sent == [b"hi\n"]
    assert plain[1].sent[0] is plain[2].sent[0]
    assert shouters[0].sent == [b"HI\n"] and shouters[0].sent[0] is shouters[2].sent[0]
    for member in shouters:  # one door left: rendered once, by any member
        room.leave(member)
    room.leave(shouters[0])  # leaving twice changes nothing
    assert room.broadcast("again") == 3 and plain[0].sent == [b"again\n"]


def test_a_member_that_never_reads_does_not_delay_the_others():
    limits = SessionLimits(max_queue_bytes=200_000, max_queue_frames=1000, linger=0.1)
    room = Room("r")
    pairs = [gsocket.socketpair() for _ in range(3)]
    members = [Member(i, limits=limits) for i in range(3)]
    for member, (ours, _) in zip(members, pairs, strict=True):
        member.start(ours)
        room.enter(member)
    received = {1: 0, 2: 0}
    progress = gevent.event.Event()

    def reader(index: int) -> None:
        sock = pairs[index][1]
        while chunk := sock.recv(65536):
            received[index] += chunk.count(b"\n")
            progress.set()

    def wait_for(count: int) -> None:
        with gevent.Timeout(5, AssertionError(f"readers stuck at {received}, expected {count}")):
            while min(received.values()) < count:
                progress.clear()
                progress.wait()

    readers = [gevent.spawn(reader, 1), gevent.spawn(reader, 2)]  # member 0 never reads
    frame = b"y" * 1000 + b"\n"
    for sent in range(20, 3001, 20):
        for _ in range(20):
            room.broadcast(frame)
        wait_for(sent)  # the others get everything while member 0 reads nothing
    assert members[0].wait_closed(5) and members[0].disconnect_reason == "slow_consumer"
    assert [m.is_open for m in members] == [False, True, True]
    for member in members[1:]:
        member.close("done")
    gevent.joinall(readers, timeout=5)
    assert received == {1: 3000, 2: 3000}
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def test_two_room_masters_are_independent_and_empty_rooms_go():
    one, two = RoomMaster(Room), RoomMaster(Room, keep_empty=lambda room: room.name.startswith("#"))
    member = Member(1)
    one.enter("a", member)
    two.enter("a", member)
    two.enter("#kept", member)
    assert one.get("a") is not two.get("a")
    one.leave("a", member)
    two.leave("a", member)
    two.leave("#kept", member)
    assert one.get("a") is None and two.get("a") is None
    assert two.get("#kept") is not None and len(two) == 1


def test_a_run_is_one_blob_per_door_and_excluded_members_are_told_in_place():
    room, plain, shouters = two_doors(3, 2)
    told: list[tuple[int, int]] = []

    def excluded(member: Session, index: int) -> None:
        told.append((member.session_id, index))
        member.send(b"own %d\n" % index)

    delivered = room.broadcast_run(["a", "b", "c"], [None, shouters[0], None], excluded,
                                   max_bytes=100)
    assert Shouter.renders == 3  # each event once for the door, not once per member
    assert plain[0].sent == [b"a\nb\nc\n"] and plain[0].sent[0] is plain[2].sent[0]
    assert shouters[1].sent == [b"A\nB\nC\n"]
    # The excluded member gets the others one by one, and its own at its place.
    assert shouters[0].sent == [b"A\n", b"own 1\n", b"C\n"] and told == [(4, 1)]
    assert delivered == 3 * 3 + 3 + 2
    assert plain[0].queued_frames == 3  # the blob counts as its frames


def test_a_member_near_its_mark_gets_a_run_frame_by_frame_and_is_bounded_as_by_send():
    limits = SessionLimits(max_queue_bytes=100, max_queue_frames=1000)
    room = Room("r")
    roomy, near = Plain(1), Plain(2, limits=limits)
    room.enter(roomy)
    room.enter(near)
    near.send(b"x" * 45)  # under the mark (50) before, past it with the run's 8 bytes
    room.broadcast_run(["a", "b", "c", "d"], [None] * 4, lambda member, index: None,
                       max_bytes=100)
    assert roomy.sent == [b"a\nb\nc\nd\n"]
    assert near.sent == [b"x" * 45, b"a\n", b"b\n", b"c\n", b"d\n"]
    assert near.queued_frames == 5 and near.queued_bytes == 53


def test_a_run_written_to_a_socket_counts_down_to_nothing_queued():
    ours, theirs = gsocket.socketpair()
    member = Plain(1)
    member.start(ours)
    room = Room("r")
    room.enter(member)
    room.broadcast_run(["a", "b", "c"], [None] * 3, lambda member, index: None, max_bytes=100)
    member.send(b"d\n")
    assert member.queued_frames == 4
    received = b""
    with gevent.Timeout(5):
        while received.count(b"\n") < 4:
            received += theirs.recv(100)
    assert received == b"a\nb\nc\nd\n"
    with gevent.Timeout(5):
        while member.queued_frames or member.queued_bytes:
            gevent.sleep(0.01)
    member.disconnect()
    theirs.close()


def test_a_run_too_big_for_one_door_goes_one_event_at_a_time_with_a_pause_between():
    room = Room("r")
    plain, shouter = Plain(1), Shouter(2)
    room.enter(plain)
    room.enter(shouter)
    steps: list[str] = []
    room.broadcast_run(["aaaa", "bbbb"], [shouter, None],
                       lambda member, index: steps.append(f"own {index}"),
                       max_bytes=9, between=lambda index: steps.append(f"pause {index}"))
    assert steps == ["own 0", "pause 0", "pause 1"]  # after each event, its sender told first
    assert plain.sent == [b"aaaa\n", b"bbbb\n"] and shouter.sent == [b"BBBB\n"]
