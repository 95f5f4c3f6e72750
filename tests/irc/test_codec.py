"""The IRC line codec, pure: the framer whole, byte by byte and with trailing data; parse
and render against the specifications' examples; round trips and the fuzz rule."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gchat.irc import (
    CLIENT_TAGS_MAX,
    MAX_LINE,
    TAGS_MAX,
    BadLine,
    IrcFramer,
    Message,
    casefold_ascii,
    line,
    parse,
    render,
    render_tags,
    split_text,
    text_budget,
    text_line,
)


def feed_all(framer: IrcFramer, chunks) -> list[bytes | BadLine]:
    items: list[bytes | BadLine] = []
    for chunk in chunks:
        items.extend(framer.feed(chunk))
    return items


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def decode(items: list[bytes | BadLine]) -> list[Message | BadLine]:
    return [item if isinstance(item, BadLine) else parse(item) for item in items]


def too_long(item) -> bool:
    return isinstance(item, BadLine) and item.reason == "too_long"


# irctest message_tags.py testLengthLimits: the edges of the client tag limit.
MAX_TAGMSG = b"@foo=bar;+baz=" + b"a" * 4081 + b" TAGMSG #test"
EXCESS_TAGMSG = b"@foo=bar;+baz=" + b"a" * 4082 + b" TAGMSG #test"
MAX_PRIVMSG = b"@foo=bar;+baz=" + b"a" * 4081 + b" PRIVMSG #test " + b"b" * 496
EXCESS_PRIVMSG = b"@foo=bar;+baz=" + b"a" * 4082 + b" PRIVMSG #test " + b"b" * 495
# irctest messages.py testLineTooLong
MONSTER = b"@+clientOnlyTagExample=" + b"a" * 4096 + b" PRIVMSG #xyz hi!"
# irctest messages.py LengthLimitTestCase: 510 bytes and a CRLF fit, 511 do not
PING_AT_LIMIT = b"PING " + b"x" * 505
PING_OVER_LIMIT = b"PING " + b"x" * 506


# --- the framer -----------------------------------------------------------------------

def test_crlf_lf_empty_lines_and_a_bare_cr():
    framer = IrcFramer()
    got = framer.feed(b"PING a\r\nPING b\n\r\n\n\r\nPING c\r\r\nPING d\rPING e\nPIN")
    assert got == [b"PING a", b"PING b", b"PING c\r", b"PING d\rPING e"]
    assert framer.buffered == 3
    assert framer.feed(b"G f\r") == []
    assert framer.feed(b"\n") == [b"PING f"]
    assert framer.buffered == 0
    # a CR left inside a line makes it a BadLine, never two lines
    assert parse(b"PING d\rPING e") == BadLine("malformed", "the line holds a NUL, CR or LF", "PING")


def test_trailing_data_stays_buffered():
    framer = IrcFramer()
    assert framer.feed(b"PING a\r\nPRIVMSG #x :hal") == [b"PING a"]
    assert framer.feed(b"") == []
    assert framer.buffered == len(b"PRIVMSG #x :hal")
    assert framer.feed(b"f\r") == []
    assert framer.feed(b"\nPING") == [b"PRIVMSG #x :half"]
    assert framer.buffered == 4


def test_body_limit_counts_a_crlf_however_the_line_ends():
    for ending in (b"\r\n", b"\n"):
        framer = IrcFramer()
        got = framer.feed(PING_AT_LIMIT + ending + PING_OVER_LIMIT + ending + b"JOIN #test_channel" + ending)
        assert got[0] == PING_AT_LIMIT
        assert too_long(got[1]) and got[1].detail == "the line exceeds 512 bytes"
        assert got[2:] == [b"JOIN #test_channel"]
        assert parse(got[2]) == Message("JOIN", ("#test_channel",))


def test_tag_limits_of_irctest_length_limits():
    stream = b"".join(item + b"\r\n" for item in (
        MAX_TAGMSG, EXCESS_TAGMSG, MAX_PRIVMSG, EXCESS_PRIVMSG, MONSTER, b"PING ok"))
    assert MAX_TAGMSG.index(b"TAGMSG") == 4096 and len(MAX_PRIVMSG) == 4096 + 510
    expected_kinds = ["line", "tags", "line", "tags", "tags", "line"]
    for chunks in ([stream], byte_by_byte(stream)):
        got = feed_all(IrcFramer(), chunks)
        kinds = ["line" if isinstance(item, bytes) else
                 "tags" if "tags" in item.detail else "body" for item in got]
        assert kinds == expected_kinds
        assert all(item.reason == "too_long" for item in got if isinstance(item, BadLine))
        tagmsg = parse(got[0])
        assert isinstance(tagmsg, Message)
        assert tagmsg.tags == {"foo": "bar", "+baz": "a" * 4081}
        assert (tagmsg.command, tagmsg.params) == ("TAGMSG", ("#test",))
        assert parse(got[2]) == Message("PRIVMSG", ("#test", "b" * 496), None,
                                        {"foo": "bar", "+baz": "a" * 4081})
        assert parse(got[-1]) == Message("PING", ("ok",))


def test_a_client_reads_server_tags_up_to_8191_bytes():
    section = b"@" + b"t" * (TAGS_MAX - 2) + b" "
    framer = IrcFramer(max_tags=TAGS_MAX)
    assert framer.feed(section + b"PING x\r\n" + b"@" + section + b"PING y\r\n") == [
        section + b"PING x", BadLine("too_long", f"the tags exceed {TAGS_MAX} bytes")]
    assert too_long(IrcFramer().feed(section + b"PING x\r\n")[0])


def test_too_long_is_reported_at_once_and_the_rest_of_the_line_dropped():
    framer = IrcFramer()
    assert framer.feed(b"PRIVMSG #a :" + b"x" * 498) == []  # 510 bytes: may still end here
    assert framer.buffered == 510
    assert framer.feed(b"\r") == []  # a CR may be the ending
    got = framer.feed(b"y")
    assert too_long(got[0]) and len(got) == 1
    assert framer.buffered == 0 and framer.skipping
    assert framer.feed(b"z" * 100_000) == []
    assert framer.buffered == 0
    assert framer.feed(b"zz\r\nPING after\r\n") == [b"PING after"]
    assert not framer.skipping


def test_tags_without_a_space_are_too_long_before_the_line_ends():
    framer = IrcFramer()
    assert framer.feed(b"@" + b"k" * (CLIENT_TAGS_MAX - 2)) == []  # the SPACE may come next
    assert too_long(framer.feed(b"k")[0])
    assert framer.buffered == 0


@pytest.mark.parametrize("stream", [
    b"P" * 3000 + b"\r\n",
    b"@" + b"k" * 9000 + b" PING x\r\n",
    b"@k=v " + b"P" * 3000 + b"\n",
])
def test_the_buffer_never_grows_past_one_maximal_line(stream):
    framer = IrcFramer()
    hard = CLIENT_TAGS_MAX + MAX_LINE - 1
    got = []
    for byte in byte_by_byte(stream + b"PING next\r\n"):
        got.extend(framer.feed(byte))
        assert framer.buffered <= hard
    assert too_long(got[0]) and got[1:] == [b"PING next"]
    assert feed_all(IrcFramer(), [stream + b"PING next\r\n"]) == got


def test_a_huge_read_is_judged_without_being_kept():
    framer = IrcFramer()
    got = framer.feed(b"PING a\r\n" + b"x" * 1_000_000 + b"\r\nPING b\r\n" + b"y" * 1_000_000)
    assert got[0] == b"PING a" and too_long(got[1]) and got[2] == b"PING b" and too_long(got[3])
    assert len(got) == 4 and framer.buffered == 0 and framer.skipping


def test_limits_are_checked():
    with pytest.raises(ValueError):
        IrcFramer(max_body=2)


lines = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda n, tail: b"@" + b"t" * n + tail, st.integers(0, 4200), st.binary(max_size=20)),
    st.builds(lambda n: b"PRIVMSG #a :" + b"x" * n, st.integers(490, 520)),
).map(lambda item: item.replace(b"\n", b""))


@settings(max_examples=150)
@given(items=st.lists(lines, max_size=8), endings=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=20))
def test_any_split_yields_the_same_lines_and_markers(items, endings, cuts):
    stream = b"".join(item + ending for item, ending in zip(items, endings, strict=False))
    whole = IrcFramer().feed(stream)
    split = IrcFramer()
    assert feed_all(split, split_at(stream, cuts)) == whole
    assert split.buffered == 0
    # each line comes out once, without its ending, unless empty or too long
    assert len(whole) == sum(1 for item, ending in zip(items, endings, strict=False)
                             if (item + ending)[:-1].removesuffix(b"\r"))
    for got in whole:
        assert isinstance(got, BadLine) or (got and b"\n" not in got)


# --- parse ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw,message", [
    # modern, "Parameters" examples
    (b":irc.example.com CAP * LIST :", Message("CAP", ("*", "LIST", ""), "irc.example.com")),
    (b"CAP * LS :multi-prefix sasl", Message("CAP", ("*", "LS", "multi-prefix sasl"))),
    (b"CAP REQ :sasl message-tags foo", Message("CAP", ("REQ", "sasl message-tags foo"))),
    (b":dan!d@localhost PRIVMSG #chan :Hey!", Message("PRIVMSG", ("#chan", "Hey!"), "dan!d@localhost")),
    (b":dan!d@localhost PRIVMSG #chan Hey!", Message("PRIVMSG", ("#chan", "Hey!"), "dan!d@localhost")),
    (b":dan!d@localhost PRIVMSG #chan ::-)", Message("PRIVMSG", ("#chan", ":-)"), "dan!d@localhost")),
    # modern, "Tags" examples
    (b"@id=123AB;rose PING", Message("PING", (), None, {"id": "123AB", "rose": ""})),
    (b"@url=;netsplit=tur,ty PING", Message("PING", (), None, {"url": "", "netsplit": "tur,ty"})),
    # message-tags, "Examples"
    (b"@aaa=bbb;ccc;example.com/ddd=eee :nick!ident@host.com PRIVMSG me :Hello",
     Message("PRIVMSG", ("me", "Hello"), "nick!ident@host.com",
             {"aaa": "bbb", "ccc": "", "example.com/ddd": "eee"})),
    (rb"@+example=raw+:=,escaped\:\s\\ :irc.example.com NOTICE #channel :Message",
     Message("NOTICE", ("#channel", "Message"), "irc.example.com", {"+example": "raw+:=,escaped; \\"})),
    # irctest message_tags.py testBasic
    (rb"@+buzz=fizz\:buzz;cat=dog;+steel=wootz TAGMSG #test",
     Message("TAGMSG", ("#test",), None, {"+buzz": "fizz;buzz", "cat": "dog", "+steel": "wootz"})),
    # command case, space runs, a middle with colons, a trailing space dropped
    (b"privmsg   #a:b    hi  ", Message("PRIVMSG", ("#a:b", "hi"))),
    (b"@a=1   :src   001   me  :  x ", Message("001", ("me", "  x "), "src", {"a": "1"})),
    (b"PING", Message("PING")),
    (b"@ PING", Message("PING")),
    # RFC 2812: the 15th parameter is the rest of the line
    (b"X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16  :17 ",
     Message("X", (*[str(i) for i in range(1, 15)], "15 16  :17 "))),
    (b"X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 :15 16", Message("X", (*[str(i) for i in range(1, 15)], "15 16"))),
    ("PRIVMSG #é :😃 ok".encode(), Message("PRIVMSG", ("#é", "😃 ok"))),
])
def test_parse_examples(raw, message):
    assert parse(raw) == message


@pytest.mark.parametrize("escaped,value", [
    (rb"test\\", "test\\"), (b"test\\", "test"), (rb"\b", "b"), (rb"a\sb\:c\rd\ne", "a b;c\rd\ne"),
    (rb"\\s", "\\s"), (b"\\", ""), (rb"\\\\", "\\\\"), (b"=x", "=x"),
])
def test_tag_value_unescaping(escaped, value):
    # message-tags, "Escaping values": a lone trailing \ gives nothing, \b gives b
    assert parse(b"@k=" + escaped + b" PING").tags == {"k": value}


def test_tags_repeated_keys_and_empty_items():
    assert parse(b"@a=1;;a=2;=x;b PING").tags == {"a": "2", "b": ""}


@pytest.mark.parametrize("raw,detail", [
    (b"", "the line has no command"),
    (b"@tags-only", "the line has tags but no command"),
    (b":source-only", "the line has a source but no command"),
    (b": PING", "the line has an empty source"),
    (b":src  ", "the line has no command"),
    (b"   ", "the line has no command"),
    ("ÉTÉ x".encode(), "bad command 'ÉTÉ'"),
    (b"PRIV.MSG #a", "bad command 'PRIV.MSG'"),
])
def test_malformed_lines(raw, detail):
    assert parse(raw) == BadLine("malformed", detail)


def test_a_command_no_server_knows_still_parses_so_it_can_get_421():
    for raw, command in [(b"12 x", "12"), (b"NONEXISTENT_COMMAND", "NONEXISTENT_COMMAND"),
                         (b"priv1msg #a", "PRIV1MSG")]:
        assert parse(raw).command == command


def test_nul_cr_lf_are_bad_lines_that_keep_the_command_and_tags():
    assert parse(b"@label=x PRIVMSG #a :hi\x00there") == BadLine(
        "malformed", "the line holds a NUL, CR or LF", "PRIVMSG", {"label": "x"})
    assert parse(b"PRIVMSG #a :\rhi").command == "PRIVMSG"
    assert parse(b"\x00").command is None


def test_invalid_utf8_is_rejected_with_the_command_and_the_label():
    # irctest utf8.py: FAIL PRIVMSG INVALID_UTF8, labeled
    assert parse(b"@label=xyz PRIVMSG #qux hi\xaa") == BadLine(
        "invalid_utf8", "the line is not valid UTF-8", "PRIVMSG", {"label": "xyz"})
    assert parse(b"USER \xe8rc\xe9 * * :realname").command == "USER"
    bad = parse(b"@label=\xff;ok=1 \xffPRIV")
    assert bad == BadLine("invalid_utf8", "the line is not valid UTF-8", None, {"ok": "1"})


# --- render ---------------------------------------------------------------------------

@pytest.mark.parametrize("message,raw", [
    (Message("PRIVMSG", ("#chan", "Hey!"), "dan!d@localhost"), b":dan!d@localhost PRIVMSG #chan Hey!\r\n"),
    (Message("PRIVMSG", ("#chan", "Hey there")), b"PRIVMSG #chan :Hey there\r\n"),
    (Message("PRIVMSG", ("#chan", ":-)")), b"PRIVMSG #chan ::-)\r\n"),
    (Message("CAP", ("*", "LIST", "")), b"CAP * LIST :\r\n"),
    (Message("PING"), b"PING\r\n"),
    (Message("TAGMSG", ("#c",), "n!u@h", {"msgid": "1", "+example": "raw+:=,escaped; \\", "flag": ""}),
     b"@msgid=1;+example=raw+:=,escaped\\:\\s\\\\;flag :n!u@h TAGMSG #c\r\n"),
    (Message("NOTICE", ("#c", "x"), None, {"k": "a\r\nb"}), b"@k=a\\r\\nb NOTICE #c x\r\n"),
])
def test_render_examples(message, raw):
    assert render(message) == raw
    assert parse(raw[:-2]) == message


@pytest.mark.parametrize("kwargs", [
    {"command": "PRIVMSG", "params": ("#a", "x\ny")},
    {"command": "PRIVMSG", "params": ("#a", "x\ry")},
    {"command": "PRIVMSG", "params": ("#a", "x\0y")},
    {"command": "PRIVMSG", "params": ("#a b", "x")},
    {"command": "PRIVMSG", "params": ("", "x")},
    {"command": "PRIVMSG", "params": (":a", "x")},
    {"command": "PRIVMSG", "params": ("a\0", "x")},
    {"command": "PRIV MSG", "params": ()},
    {"command": "PRIV.MSG", "params": ()},
    {"command": "", "params": ()},
    {"command": "X", "params": tuple("abcdefghijklmnop")},
    {"command": "X", "params": (), "source": ""},
    {"command": "X", "params": (), "source": "a b"},
    {"command": "X", "params": (), "tags": {"": "v"}},
    {"command": "X", "params": (), "tags": {"a b": "v"}},
    {"command": "X", "params": (), "tags": {"a;b": "v"}},
    {"command": "X", "params": (), "tags": {"a=b": "v"}},
    {"command": "X", "params": (), "tags": {"a": "v\0"}},
    {"command": "X", "params": ("\ud800",)},
])
def test_render_refuses_what_cannot_round_trip(kwargs):
    with pytest.raises(ValueError):
        render(Message(**kwargs))


def test_line_and_render_tags_share_a_body():
    body = line("PRIVMSG", "#a", "hi there", source="n!u@h")
    assert body == b":n!u@h PRIVMSG #a :hi there\r\n"
    assert render_tags({}) == b""
    tagged = render_tags({"time": "2026-01-01T00:00:00.000Z", "msgid": "a b"}) + body
    assert tagged == b"@time=2026-01-01T00:00:00.000Z;msgid=a\\sb :n!u@h PRIVMSG #a :hi there\r\n"
    assert parse(tagged[:-2]).tags == {"time": "2026-01-01T00:00:00.000Z", "msgid": "a b"}


def test_text_line_and_its_budget():
    assert text_line("PRIVMSG", "#a", "hi", source="n!u@h") == b":n!u@h PRIVMSG #a :hi\r\n"
    assert text_line("NOTICE", "bob", "", source="srv") == b":srv NOTICE bob :\r\n"
    budget = text_budget("PRIVMSG", "#é", source="n!u@h")
    assert len(text_line("PRIVMSG", "#é", "x" * budget, source="n!u@h")) == MAX_LINE
    for bad in [("PRIVMSG", "#a", "x\n"), ("PRIVMSG", "#a b", "x"), ("PRIVMSG", "", "x"), ("P M", "#a", "x")]:
        with pytest.raises(ValueError):
            text_line(*bad, source="n!u@h")
    with pytest.raises(ValueError):
        text_line("PRIVMSG", "#a", "x", source="")


# --- round trips and the fuzz rule ------------------------------------------------------

def chars(exclude: str) -> st.SearchStrategy[str]:
    return st.characters(blacklist_characters=exclude, blacklist_categories=("Cs",))


words = st.text(chars(" \0\r\n"), min_size=1, max_size=12)
middles = words.filter(lambda word: not word.startswith(":"))
messages = st.builds(
    lambda command, middle, last, source, tags: Message(command, (*middle, *last), source, tags),
    st.one_of(st.from_regex(r"[A-Z]{1,10}", fullmatch=True), st.from_regex(r"[0-9]{3}", fullmatch=True)),
    st.lists(middles, max_size=14),
    st.lists(st.text(chars("\0\r\n"), max_size=30), max_size=1),
    st.none() | words,
    st.dictionaries(st.text(chars(" ;=\0\r\n"), min_size=1, max_size=10), st.text(chars("\0"), max_size=20),
                    max_size=4),
)


@settings(max_examples=300)
@given(message=messages)
def test_any_valid_message_renders_then_parses_back_to_itself(message):
    raw = render(message)
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == 1
    assert parse(raw[:-2]) == message
    framer = IrcFramer(max_tags=TAGS_MAX, max_body=100_000)
    assert [parse(item) for item in feed_all(framer, byte_by_byte(raw))] == [message]


@settings(max_examples=300)
@given(data=st.binary(max_size=600) | st.lists(st.sampled_from(
           [b"@", b"a=b", b";", b"\\", b" ", b":", b"PRIVMSG", b"#a", b"\r", b"\n", b"\x00", b"\xff", b"\xc3",
            b"\xa9", "é".encode(), b"001", b"x" * 300]), max_size=60).map(b"".join),
       cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=10))
def test_fuzz_rule_any_bytes_yield_messages_or_bad_lines(data, cuts):
    # The rule: any bytes fed to the framer, then to parse, yield Messages and BadLines,
    # the same for every split, and nothing else; a Message renders and parses back.
    for max_tags in (CLIENT_TAGS_MAX, 8):
        whole = decode(IrcFramer(max_tags=max_tags).feed(data))
        split = IrcFramer(max_tags=max_tags)
        got = decode(feed_all(split, split_at(data, cuts)))
        assert got == whole
        assert split.buffered <= max_tags + MAX_LINE - 1
        for item in got:
            assert isinstance(item, Message | BadLine)
            if isinstance(item, Message):
                assert parse(render(item)[:-2]) == item


# --- split_text -------------------------------------------------------------------------

def test_split_text_lines_and_empty_lines():
    assert split_text("hello", 100) == ["hello"]
    assert split_text("a\n\nb\r\nc\rd\n", 100) == ["a", "b", "c", "d"]
    assert split_text("\n\r\n", 100) == []
    assert split_text("  \n", 100) == ["  "]
    assert split_text("a\0b", 100) == ["a\ufffdb"]


def test_split_text_breaks_after_a_space_in_the_last_fifth():
    text = "word " * 50
    pieces = split_text(text, 48)
    assert all(len(piece.encode()) <= 48 and piece.endswith(" ") for piece in pieces[:-1])
    assert "".join(pieces) == text.rstrip("\n")
    # a space too early in the piece (before the last fifth) is not used
    assert split_text("a " + "b" * 20, 10) == ["a bbbbbbbb", "bbbbbbbbbb", "bb"]


def test_split_text_keeps_code_points_and_combining_marks_whole():
    assert split_text("😃" * 3, 5) == ["😃"] * 3
    assert split_text("😃" * 3, 8) == ["😃😃", "😃"]
    accented = "e\u0301" * 10  # 3 bytes each
    assert split_text(accented, 10) == ["e\u0301" * 3, "e\u0301" * 3, "e\u0301" * 3, "e\u0301"]
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 18 bytes joined by ZWJ
    assert split_text("xyz" + family, 20) == ["xyz", family]  # the joined emoji kept whole
    assert split_text("ab" + family, 16) == ["ab", family[:4], family[4:]]  # longer than a piece
    zalgo = "a" + "\u0301" * 20  # no base to go back to: cut at a code point
    assert "".join(split_text(zalgo, 8)) == zalgo
    with pytest.raises(ValueError):
        split_text("x", 3)


@settings(max_examples=200)
@given(text=st.text(st.one_of(chars(""), st.sampled_from(["\n", "\r", " ", "\u0301", "\u200d", "😃", "é"])),
                    max_size=400),
       budget=st.integers(min_value=4, max_value=120))
def test_split_text_respects_the_budget_and_keeps_the_text(text, budget):
    pieces = split_text(text, budget)
    for piece in pieces:
        assert piece and len(piece.encode("utf-8")) <= budget
        assert not any(c in piece for c in "\r\n\0")
    text = text.replace("\0", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")
    rows = [row for row in text.split("\n") if row]
    assert pieces == [piece for row in rows for piece in split_text(row, budget)]
    for row in rows:
        assert "".join(split_text(row, budget)) == row


# --- names ------------------------------------------------------------------------------

def test_casefold_ascii():
    assert casefold_ascii("#DeV") == casefold_ascii("#dev") == "#dev"
    assert casefold_ascii("Foo[]\\~") == "foo[]\\~"  # ascii, not rfc1459: brackets stay
    assert casefold_ascii("K\u212aÉ") == "k\u212aÉ"  # only A-Z fold (no Kelvin sign to k)


def test_the_codec_imports_neither_socket_nor_gevent():
    # STYLE.md 1: protocol parsing is pure
    code = "import sys, gchat.irc; assert 'socket' not in sys.modules and 'gevent' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
