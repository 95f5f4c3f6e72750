"""The IRC line codec, pure: bytes in, messages out; messages in, bytes out.

No sockets, no gevent, so it is tested and fuzzed on its own (like `gchat.core.framing`
and `gchat.protocol`). The specifications followed, cited below by their short names:
- "modern": https://modern.ircdocs.horse (the client protocol, "Message Format");
- "message-tags": https://ircv3.net/specs/extensions/message-tags (IRCv3);
- "utf8-only": https://ircv3.net/specs/extensions/utf8-only (IRCv3);
- RFC 1459 section 2.3.1 and RFC 2812 section 2.3.1 (the message grammar).

Strategy. `IrcFramer` cuts the byte stream into lines at each LF, dropping one CR
before it, and checks the two size limits of message-tags ("Size limit": the tags
section and the rest of the message are counted apart) on the incomplete line before
it keeps it, so its buffer never holds more than one maximal line. A line over either
limit becomes an in-band `BadLine` marker (reason "too_long": the session answers 417
ERR_INPUTTOOLONG and goes on, as irctest's message_tags and messages tests expect), and
the framer drops the rest of that line up to its LF without keeping it. `parse` turns
one line into a `Message`, or a `BadLine` when the line is not UTF-8, holds a NUL, CR
or LF, or lacks a valid command; it never raises. `render` and `line` are the inverse
and refuse (ValueError) what cannot round-trip. The rule the fuzz tests hold the codec
to: any bytes fed to the framer, then to `parse`, yield Messages and BadLines, the same
for every split of the stream, and nothing else.

Decisions, each with its reason:
- Line ends: LF ends a line and one CR before it is dropped; a bare CR does not end a
  line, and a CR left inside a line makes it a BadLine. Modern, "Compatibility with
  incorrect software": servers SHOULD handle a single LF, and only MAY handle a single
  CR; taking CR as an end too needs a look-ahead state for a CRLF split across reads,
  and no client sends bare CRs.
- Sizes: the body (everything after the tags section) may be 512 bytes counting a CRLF
  ending (modern: "512 bytes in length, including the trailing CR-LF"), so 510 bytes
  without its ending, however the client ended it. The tags section, from "@" to the
  SPACE after it, may be `max_tags` bytes: 4096 (`CLIENT_TAGS_MAX`) for lines from a
  client, since message-tags says "Clients MUST NOT send messages with tag data
  exceeding 4094 bytes" and "<client_max> (4096) :: '@' <tag_data 4094> ' '", and
  "Servers MUST reply with ERR_INPUTTOOLONG"; 8191 (`TAGS_MAX`, "<combined_max>") for
  lines from a server. irctest's testLengthLimits checks exactly these edges.
- Empty lines are ignored (modern: "Servers and clients SHOULD ignore empty lines").
- Encoding: a line that is not UTF-8 is a BadLine (reason "invalid_utf8"), never decoded
  as latin-1: gchat advertises UTF8ONLY, and utf-8-only says servers SHOULD answer such
  a message with FAIL <command> INVALID_UTF8; the BadLine carries the command and the
  tags (the label) when the line got that far.
- Parameters: at most 15 (RFC 2812: `*14( SPACE middle ) [ SPACE ":" trailing ]` or
  `14( SPACE middle ) [ SPACE [ ":" ] trailing ]`), so a 15th parameter holds the rest
  of the line; runs of SPACE separate parts (modern: "one or more ASCII SPACE").
- Tags: keys are opaque and never rejected, the last of repeated keys wins, empty and
  missing values are both "" and render as a bare key (message-tags, "Format"); values
  are unescaped per message-tags "Escaping values", a lone trailing backslash and the
  backslash of an unknown escape being dropped.
- Chat texts: `split_text` sends each line of a text as its own PRIVMSG, drops empty
  lines (servers refuse an empty text with 412 ERR_NOTEXTTOSEND, and a lone space
  would be an invented character), replaces NUL (which no IRC line may hold) with
  U+FFFD, and keeps a break's space at the end of the earlier piece, so the pieces of
  one line concatenate back to that line exactly.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CLIENT_TAGS_MAX",
    "MAX_LINE",
    "MAX_PARAMS",
    "TAGS_MAX",
    "BadLine",
    "IrcFramer",
    "Message",
    "casefold_ascii",
    "line",
    "parse",
    "parse_tags",
    "render",
    "render_tags",
    "split_text",
    "text_budget",
    "text_line",
]

MAX_LINE = 512  # modern: a message is 512 bytes "including the trailing CR-LF"
CLIENT_TAGS_MAX = 4096  # message-tags: <client_max> (4096) :: '@' <tag_data 4094> ' '
TAGS_MAX = 8191  # message-tags: <combined_max> (8191), what a client must accept
MAX_PARAMS = 15  # RFC 1459 / RFC 2812 section 2.3.1

Reason = Literal["too_long", "invalid_utf8", "malformed"]


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message. `command` is upper case; `tags` hold unescaped values ("" for a
    tag without a value); `source` is the prefix without its ":" (None when absent)."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is no message. `reason` says what to answer: "too_long" is 417
    ERR_INPUTTOOLONG, "invalid_utf8" is FAIL <command> INVALID_UTF8 (utf-8-only), and
    "malformed" (a NUL, CR or LF inside, no valid command) may be ignored. `command` and
    `tags` are the message's own when the line got that far (to label the answer)."""

    reason: Reason
    detail: str
    command: str | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)


@functools.lru_cache(maxsize=16)
def _too_long(part: str, limit: int) -> BadLine:
    """The marker for a too-long line, one per limit (a framer per connection keeps none)."""
    return BadLine("too_long", f"the {part} exceed{'s' if part == 'line' else ''} {limit} bytes")


class IrcFramer:
    """Split a byte stream into IRC lines (bytes, without CR and LF) and `BadLine`
    markers for the lines over the size limits.

    `max_tags` bounds the tags section, its "@" and its SPACE included: 4096 reading a
    client, `TAGS_MAX` reading a server. `max_body` bounds the rest, counted with a CRLF.
    """

    __slots__ = ("_buffer", "_hard", "_skipping", "max_body", "max_tags")  # one per session

    def __init__(self, *, max_tags: int = CLIENT_TAGS_MAX, max_body: int = MAX_LINE) -> None:
        if max_tags < 2 or max_body < 3:
            raise ValueError("max_tags must be at least 2 and max_body at least 3")
        self.max_tags = max_tags
        self.max_body = max_body
        # The longest line that may be valid: a full tags section, a full body without
        # its CRLF, and one CR that may turn out to be the line's ending.
        self._hard = max_tags + max_body - 2 + 1
        self._buffer = bytearray()
        self._skipping = False  # inside a too-long line already reported

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held, waiting for its LF."""
        return len(self._buffer)

    @property
    def skipping(self) -> bool:
        """True while dropping the rest of a too-long line, up to its LF."""
        return self._skipping

    def feed(self, data: bytes) -> list[bytes | BadLine]:
        """Take the next bytes of the stream; return the lines and markers they complete."""
        out: list[bytes | BadLine] = []
        start = 0
        if self._skipping:
            start = data.find(b"\n") + 1
            if start == 0:
                return out
            self._skipping = False
        buffer = self._buffer
        hard = self._hard
        while (lf := data.find(b"\n", start)) >= 0:
            if buffer:
                line = self._join(data, start, lf)
                buffer.clear()
            elif lf - start > hard:
                line = data[start:start + hard + 1]  # enough to judge it; never copy more
            else:
                line = data[start:lf]
            start = lf + 1
            size = len(line)
            if size and line[-1] == 13:  # one CR before the LF (modern)
                size -= 1
            if size == 0:
                continue  # modern: "SHOULD ignore empty lines"
            fault = self._check(line, size)
            if fault is not None:
                out.append(fault)
            else:
                out.append(line if size == len(line) else line[:size])
        if start < len(data):
            # An incomplete line: judge it before keeping it (STYLE.md 1).
            if len(buffer) + len(data) - start > hard:
                probe = self._join(data, start, len(data))
                fault = self._check(probe, len(probe))
            else:
                buffer += data[start:]
                fault = self._check(buffer, len(buffer) - buffer.endswith(b"\r"))
            if fault is not None:
                out.append(fault)
                buffer.clear()
                self._skipping = True
        return out

    def _join(self, data: bytes, start: int, stop: int) -> bytes:
        """The buffered start of a line and data[start:stop], cut after `_hard` + 1
        bytes: enough to judge the line, and never a copy of an unbounded line."""
        room = self._hard + 1 - len(self._buffer)
        return bytes(self._buffer) + data[start:min(stop, start + room)]

    def _check(self, line: bytes | bytearray, size: int) -> BadLine | None:
        """The marker for line[:size] (a line or the start of one) if it is already too
        long, else None. More bytes never make a too-long start fit again."""
        if line[:1] == b"@":
            space = line.find(b" ", 0, min(size, self.max_tags))
            if space < 0:
                # No SPACE within max_tags bytes: the section and its SPACE cannot fit.
                return _too_long("tags", self.max_tags) if size >= self.max_tags else None
            body = size - space - 1
        else:
            body = size
        if body > self.max_body - 2:
            return _too_long("line", self.max_body)
        return None


# --- parsing ---------------------------------------------------------------------------

# modern: command ::= letter* / 3digit. Also underscores, hyphens and other digit runs,
# so that a command no server knows still parses and gets 421 ERR_UNKNOWNCOMMAND.
_COMMAND = re.compile(r"[A-Za-z0-9_-]+")
_FORBIDDEN = re.compile("[\0\r\n]")  # modern: no part may hold NUL, CR or LF
_UNCLEAN = re.compile("[\0\r\n\ud800-\udfff]")  # also undecodable bytes (surrogateescape)
_ESCAPED = re.compile(r"\\(.?)", re.DOTALL)
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def parse(line: bytes) -> Message | BadLine:
    """Parse one line (LF and CR already removed) into a Message or a BadLine."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return _fault("invalid_utf8", "the line is not valid UTF-8", line.decode("utf-8", "surrogateescape"))
    if _FORBIDDEN.search(text):
        return _fault("malformed", "the line holds a NUL, CR or LF", text)
    return _parse(text)


def _fault(reason: Reason, detail: str, text: str) -> BadLine:
    """A BadLine that still carries the command and the clean tags, when there are."""
    parsed = _parse(text)
    tags = {key: value for key, value in parsed.tags.items()
            if not _UNCLEAN.search(key) and not _UNCLEAN.search(value)}
    return BadLine(reason, detail, parsed.command, tags)


def _parse(text: str) -> Message | BadLine:
    tags: dict[str, str] = {}
    rest = text
    if rest.startswith("@"):
        end = rest.find(" ")
        if end < 0:
            return BadLine("malformed", "the line has tags but no command")
        tags = parse_tags(rest[1:end])
        rest = rest[end + 1:].lstrip(" ")
    source = None
    if rest.startswith(":"):
        end = rest.find(" ")
        if end < 0:
            return BadLine("malformed", "the line has a source but no command", tags=tags)
        source = rest[1:end]
        if not source:
            return BadLine("malformed", "the line has an empty source", tags=tags)
        rest = rest[end + 1:].lstrip(" ")
    end = rest.find(" ")
    if end < 0:
        end = len(rest)
    command = rest[:end]
    if not _COMMAND.fullmatch(command):
        detail = f"bad command {command[:32]!r}" if command else "the line has no command"
        return BadLine("malformed", detail, tags=tags)
    params: list[str] = []
    size = len(rest)
    pos = end
    while True:
        while pos < size and rest[pos] == " ":
            pos += 1
        if pos >= size:
            break
        if rest[pos] == ":":
            params.append(rest[pos + 1:])  # the trailing parameter: the rest, spaces too
            break
        if len(params) == MAX_PARAMS - 1:
            params.append(rest[pos:])  # RFC 2812: the 15th parameter is the rest
            break
        end = rest.find(" ", pos)
        if end < 0:
            end = size
        params.append(rest[pos:end])
        pos = end
    return Message(command.upper(), tuple(params), source, tags)


def parse_tags(section: str) -> dict[str, str]:
    """message-tags "Format": `key[=escaped value]` items split by ';'; keys opaque."""
    tags: dict[str, str] = {}
    for item in section.split(";"):
        key, _, value = item.partition("=")
        if key:  # an empty item or key names nothing; it is skipped, not an error
            tags[key] = _ESCAPED.sub(_unescape_one, value) if "\\" in value else value
    return tags


def _unescape_one(match: re.Match[str]) -> str:
    # message-tags "Escaping values": \: \s \\ \r \n; a lone trailing backslash gives
    # nothing and an unknown escape gives the character without its backslash.
    return _UNESCAPES.get(match[1], match[1])


# --- rendering -------------------------------------------------------------------------

_BAD_WORD = re.compile("[\0\r\n ]")  # a source or a non-final parameter
_BAD_KEY = re.compile("[\0\r\n ;=]")
_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_NEEDS_ESCAPE = re.compile("[; \\\\\r\n]")


def render(message: Message) -> bytes:
    """The line for `message`, CRLF included; ValueError when it cannot be sent as is."""
    return line(message.command, *message.params, source=message.source, tags=message.tags)


def line(command: str, *params: str, source: str | None = None,
         tags: Mapping[str, str] | None = None) -> bytes:
    """One line from its fields, CRLF included. The last parameter gets its ":" when it
    is empty, starts with ":" or holds a space (modern, "Parameters"). ValueError for a
    NUL, CR or LF anywhere, a space in a source or a non-final parameter, an empty
    non-final parameter, more than 15 parameters, a bad command. The length is not
    checked: keep bodies within `MAX_LINE` (see `split_text`)."""
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"bad IRC command {command!r}")
    if len(params) > MAX_PARAMS:
        raise ValueError(f"more than {MAX_PARAMS} parameters")
    parts = []
    if source is not None:
        if not source or _BAD_WORD.search(source):
            raise ValueError(f"bad IRC source {source!r}")
        parts.append(":" + source)
    parts.append(command)
    if params:
        *middle, last = params
        for param in middle:
            if not param or param[0] == ":" or _BAD_WORD.search(param):
                raise ValueError(f"bad non-final IRC parameter {param!r}")
        parts.extend(middle)
        if _FORBIDDEN.search(last):
            raise ValueError(f"NUL, CR or LF in the IRC parameter {last!r}")
        parts.append(":" + last if not last or last[0] == ":" or " " in last else last)
    head = render_tags(tags) if tags else b""
    return head + (" ".join(parts) + "\r\n").encode("utf-8")


def render_tags(tags: Mapping[str, str]) -> bytes:
    """The tags section, "@" and its SPACE included (b"" for no tags), values escaped
    (message-tags "Escaping values"; an empty value is sent as a bare key). Built once
    per broadcast and capability set, then put before a shared body."""
    if not tags:
        return b""
    items = []
    for key, value in tags.items():
        if not key or _BAD_KEY.search(key):
            raise ValueError(f"bad tag key {key!r}")
        if not value:
            items.append(key)
            continue
        if "\0" in value:
            raise ValueError(f"NUL in the value of tag {key!r}")
        items.append(f"{key}={value.translate(_ESCAPES) if _NEEDS_ESCAPE.search(value) else value}")
    return ("@" + ";".join(items) + " ").encode("utf-8")


def text_line(command: str, target: str, text: str, *, source: str) -> bytes:
    """The fast path for the common shape `:source COMMAND target :text` (PRIVMSG,
    NOTICE), rendered once per broadcast and shared. The text always takes its ":"
    (modern: optional but allowed). ValueError as for `line`."""
    if _FORBIDDEN.search(text) or _BAD_WORD.search(source) or _BAD_WORD.search(target) \
            or not source or not target or target[0] == ":" or not _COMMAND.fullmatch(command):
        return line(command, target, text, source=source)  # raises the precise ValueError
    return f":{source} {command} {target} :{text}\r\n".encode()


def text_budget(command: str, target: str, *, source: str) -> int:
    """The bytes left for the text in `text_line(command, target, text, source=source)`
    within `MAX_LINE`: the budget to give `split_text`."""
    return MAX_LINE - len(f":{source} {command} {target} :\r\n".encode())


# --- chat texts ------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ZWJ = "\u200d".encode()


def split_text(text: str, budget: int) -> list[str]:
    """A chat text as PRIVMSG payloads of at most `budget` UTF-8 bytes each: one or more
    per non-empty line of the text (CRLF, CR and LF all break lines), never splitting a
    code point, breaking after a space found in the last fifth of the budget, otherwise
    before the base of a letter's combining marks where it can. NUL becomes U+FFFD. The
    pieces of one line, concatenated, are that line."""
    if budget < 4:
        raise ValueError("the budget must hold a code point: at least 4 bytes")
    pieces: list[str] = []
    for row in _LINE_BREAK.split(text.replace("\0", "\ufffd")):
        if not row:
            continue
        data = row.encode("utf-8")
        if len(data) <= budget:
            pieces.append(row)
            continue
        start = 0
        while len(data) - start > budget:
            cut = _cut(data, start, budget)
            pieces.append(data[start:cut].decode("utf-8"))
            start = cut
        pieces.append(data[start:].decode("utf-8"))
    return pieces


def _cut(data: bytes, start: int, budget: int) -> int:
    """Where the piece that begins at `start` ends (len(data) - start > budget)."""
    end = start + budget
    while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: not a boundary
        end -= 1
    space = data.rfind(b" ", end - budget // 5, end)
    if space >= 0:
        return space + 1  # the space stays with the earlier piece
    cut = end
    while cut > start and _joins_previous(data, cut):
        cut -= 1
        while data[cut] & 0xC0 == 0x80:
            cut -= 1
    return cut if cut > start else end  # all marks: cut at the code point boundary


def _joins_previous(data: bytes, at: int) -> bool:
    """Whether the code point at byte `at` belongs with the one before it: a combining
    mark, a zero-width joiner or what follows one, an emoji skin-tone modifier."""
    if data[max(0, at - 3):at] == _ZWJ:
        return True
    lead = data[at]
    if lead < 0x80:
        return False
    width = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    char = data[at:at + width].decode("utf-8")
    return (unicodedata.category(char) in ("Mn", "Mc", "Me") or char == "\u200d"
            or "\U0001f3fb" <= char <= "\U0001f3ff")


# --- names -----------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold_ascii(name: str) -> str:
    """`name` under CASEMAPPING=ascii (modern, "CASEMAPPING"): only A-Z fold to a-z;
    other characters are kept as they are (str.lower would fold the Kelvin sign)."""
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)
