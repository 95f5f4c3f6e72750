"""Line framing, pure: bytes in, complete lines out. No sockets, no gevent.

Strategy: keep one receive buffer. Each `feed` appends the new bytes, cuts every
complete line (LF-terminated) off the front, and checks the size limit on the one
incomplete line left over, so the buffer never holds more than `max_frame` bytes
beyond what the last feed brought. `max_frame` counts the raw bytes of a line, its
CR and LF included (PROTOCOL.md section 1); a line that exceeds it ends the stream:
`feed` returns the lines before it and sets `overflowed`, and ignores all later input.
"""

from __future__ import annotations

__all__ = ["LineFramer"]


class LineFramer:
    """Split a byte stream into lines of at most `max_frame` bytes each.

    A returned line has its LF and one CR before the LF removed; blank lines are
    returned too (the caller decides what they mean).
    """

    __slots__ = ("_buffer", "max_frame", "overflowed")  # one per session: no __dict__

    def __init__(self, max_frame: int = 65536) -> None:
        if max_frame < 2:
            raise ValueError("max_frame must be at least 2 (one byte and the LF)")
        self.max_frame = max_frame
        self.overflowed = False
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held, waiting for its LF."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream and return the lines they complete."""
        if self.overflowed or not data:
            return []
        limit = self.max_frame - 1  # the LF counts too
        if b"\n" not in data:
            # Still inside one line: check the limit before buffering any more.
            # (Appending in place keeps a line sent byte by byte linear in cost.)
            if len(self._buffer) + len(data) > limit:
                return self._overflow([])
            self._buffer += data
            return []
        lines = (bytes(self._buffer) + data).split(b"\n") if self._buffer else data.split(b"\n")
        rest = lines.pop()  # after the last LF: an incomplete line, maybe empty
        for index, line in enumerate(lines):
            if len(line) > limit:
                return self._overflow(lines[:index])
            if line.endswith(b"\r"):
                lines[index] = line[:-1]
        if len(rest) > limit:
            # Even its LF alone would take it past max_frame: no need to wait.
            return self._overflow(lines)
        self._buffer = bytearray(rest)
        return lines

    def _overflow(self, complete: list[bytes]) -> list[bytes]:
        self.overflowed = True
        self._buffer = bytearray()
        return complete
