"""The load's counting and checking, without sockets: counting clients of either door
count exactly the messages of the stream however it is cut into reads, an IRC one
answers the server's PINGs meanwhile, a subscriber's check sees a gap, and the runner
merges latency lists and histograms into the same percentiles."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gchat.bench.load import (
    _MSG,
    _PING,
    _PRIVMSG,
    BenchSession,
    Checker,
    IrcBenchSession,
    count_across,
    next_tail,
    stamp,
)
from gchat.bench.runner import latency_counts, percentile, percentile_of_counts
from gchat.irc.codec import IrcFramer, parse

IRC_LINES = [
    b":p0!p0@gchat PRIVMSG &fan :" + stamp(64, "p0:1").encode() + b"\r\n",
    b"PING gchat\r\n",
    b":s3!s3@gchat JOIN &fan\r\n",
    b":p1!p1@gchat PRIVMSG &fan :" + stamp(64, "p1:1").encode() + b"\r\n",
    b":gchat 366 s0 &fan :End of /NAMES list\r\n",
]
JSON_LINES = [
    b'{"op":"msg","room":"fan","seq":1,"from":"p0","text":"' + stamp(64, "p0:1").encode() + b'","ts":1}\n',
    b'{"op":"presence","room":"fan","nick":"s3","event":"join"}\n',
    b'{"op":"ok","id":7}\n',
]


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (taken modulo its length), in order."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.sampled_from(IRC_LINES), max_size=30), st.lists(st.integers(0, 10_000), max_size=40))
def test_count_across_finds_every_occurrence_however_the_stream_is_cut(lines, cuts):
    stream = b"".join(lines)
    for pattern in (_PRIVMSG, _PING):
        tail, found = b"\n", 0
        for data in cut(stream, cuts):
            found += count_across(pattern, tail, data)
            tail = next_tail(tail, data)
        assert found == (b"\n" + stream).count(pattern)


@given(st.lists(st.sampled_from(IRC_LINES), max_size=30), st.lists(st.integers(0, 10_000), max_size=40))
def test_a_counting_irc_session_counts_privmsgs_and_answers_each_ping(lines, cuts):
    session = IrcBenchSession()
    session.server_name = "gchat"
    session.counting = True
    for data in cut(b"".join(lines), cuts):
        session.on_data(data)
    assert session.msgs == sum(line.startswith(b":") and b" PRIVMSG " in line for line in lines)
    pongs = [parse(line) for line in IrcFramer().feed(b"".join(session._queue))]
    assert pongs == [parse(b"PONG gchat")] * lines.count(b"PING gchat\r\n")


@given(st.lists(st.sampled_from(IRC_LINES), max_size=30), st.lists(st.integers(0, 10_000), max_size=40))
def test_a_parsing_irc_session_hands_over_each_privmsg_and_counts_it_too(lines, cuts):
    session = IrcBenchSession()
    got: list[bytes] = []
    session.on_msg = got.append
    for data in cut(b"".join(lines), cuts):
        session.on_data(data)
    privmsgs = [line.removesuffix(b"\r\n") for line in lines if b" PRIVMSG " in line]
    assert got == privmsgs and session.msgs == len(privmsgs)
    assert [session.text_of(line) for line in got] == [line.split(b" :", 1)[1] for line in privmsgs]


@given(st.lists(st.sampled_from(JSON_LINES), max_size=30), st.lists(st.integers(0, 10_000), max_size=40))
def test_a_counting_json_session_counts_msg_frames_only(lines, cuts):
    session = BenchSession()
    session.counting = True
    for data in cut(b"".join(lines), cuts):
        session.on_data(data)
    assert session.msgs == sum(line.startswith(_MSG) for line in lines)


def test_the_text_of_a_msg_line_of_either_door():
    text = stamp(64, "p0:1").encode()
    assert BenchSession.text_of(b'{"op":"msg","room":"fan","text":"' + text + b'","ts":1}') == text
    assert IrcBenchSession.text_of(b":p0!p0@gchat PRIVMSG &fan :" + text) == text


def test_a_checker_counts_a_gap_a_repeat_and_a_reordering_per_sender():
    latencies: list[int] = []
    checker = Checker(latencies)
    for tag in ["p0:1", "p1:1", "p0:2", "p1:2", "p0:3"]:
        checker.check(stamp(64, tag).encode())
    assert checker.gaps == 0 and len(latencies) == 5 and all(x >= 0 for x in latencies)
    for tag in ["p0:5", "p0:5", "p1:2"]:  # p0:4 lost, p0:5 repeated, p1:2 after p1:2
        checker.check(stamp(64, tag).encode())
    assert checker.gaps == 3


@given(st.lists(st.integers(0, 200_000), min_size=1, max_size=300), st.integers(0, 4),
       st.sampled_from([0.0, 0.5, 0.99, 0.999, 1.0]))
def test_latencies_from_lists_and_histograms_give_the_percentiles_of_them_all(values, split, fraction):
    # The Python load sends every latency, the C load (value, count) pairs: merged, the
    # percentiles are those of every value together, whichever process sent which.
    cut = len(values) * split // 4
    as_list, as_histogram = values[:cut], values[cut:]
    pairs = [[value, as_histogram.count(value)] for value in sorted(set(as_histogram))]
    merged = latency_counts([{"latencies_us": as_list}, {"latency_hist_us": pairs}, {}])
    assert percentile_of_counts(merged, fraction) == percentile(sorted(values), fraction)
