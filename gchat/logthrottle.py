"""LogThrottle: a fault that repeats writes one log line per few seconds, with a count.

Strategy: a fault that strikes again and again (every batch failing on a full disk,
`accept()` failing with EMFILE for each waiting connection, a flood past the connection
limit) must not flood the log as well. Each kind of line is written the first time at
once; later lines of that kind are only counted until `interval` seconds have passed
since the last one written, and the next one then carries "(N more like this)". A count
still held back is written with the next line of its kind: nothing runs in the
background, so the helper is a pure function of its clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic

__all__ = ["LogThrottle"]


class LogThrottle:
    """Write at most one line per `interval` seconds per kind to `logger`.

    A kind is any short string naming one fault ("batch", "accept"); callers use a
    fixed set of them, so the state kept is bounded. `clock` returns seconds (tests
    inject their own).
    """

    def __init__(self, logger: logging.Logger, interval: float = 5.0, *,
                 clock: Callable[[], float] = monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._kinds: dict[str, list[float]] = {}  # kind -> [written at, lines held back since]

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log `msg % args` at `level`, or count it if a line of `kind` was written less
        than `interval` seconds ago. Return whether it was written."""
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        held = int(state[1]) if state is not None else 0
        self._kinds[kind] = [now, 0]
        if held:
            msg, args = msg + " (%d more like this)", (*args, held)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """`log` at WARNING."""
        return self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: object) -> bool:
        """`log` at ERROR."""
        return self.log(logging.ERROR, kind, msg, *args)
