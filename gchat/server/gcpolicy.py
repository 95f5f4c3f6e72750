"""Keep CPython's full garbage collections off the hot path.

Strategy: with 10,000 sessions the heap holds hundreds of thousands of container
objects, and a full (generation 2) collection walks all of them: 100 to 170 ms during
which no greenlet runs, which alone made most of the server's p99 latency. Yet the
server makes almost no cyclic garbage (its objects die by reference counting). So:

- automatic collections keep generations 0 and 1 (their cost follows the live young
  objects) but never start a full one; generation 0 waits for 20,000 allocations
  instead of 700, so young collections are 20 times rarer for about the same work each
  (most young objects die by reference counting before any collection sees them);
- every `interval` seconds a greenlet collects what is not frozen, then freezes the
  survivors (`gc.freeze`): the pause follows what survived since the last time, not
  the heap;
- every `full_every` such rounds it unfreezes everything and collects the whole heap,
  to reclaim any cycle among old objects: one long pause per hour, not several a
  minute.

It changes the process's global gc settings, so only the entry point enables it.
"""

from __future__ import annotations

import gc
import logging
import time

import gevent

__all__ = ["GcPolicy"]

log = logging.getLogger(__name__)

_NEVER = 2**31 - 1  # a threshold no count of generation-1 collections reaches
YOUNG_THRESHOLD = 20_000


class GcPolicy:
    """Run collections on a schedule instead of when allocation counts say so."""

    def __init__(self, interval: float = 60.0, full_every: int = 60) -> None:
        self.interval = interval
        self.full_every = full_every
        self._rounds = 0
        self._greenlet: gevent.Greenlet | None = None
        self._saved = gc.get_threshold()

    def start(self) -> None:
        """Freeze what exists now (modules, settings) and start the schedule."""
        gc.collect()
        gc.freeze()
        first, second, _ = self._saved
        gc.set_threshold(max(first, YOUNG_THRESHOLD), second, _NEVER)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the schedule and restore CPython's own."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        gc.set_threshold(*self._saved)
        gc.unfreeze()

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.collect()

    def collect(self) -> int:
        """One round: collect the unfrozen objects (every `full_every` rounds, all of
        them), then freeze the survivors. Returns how many objects were collected."""
        self._rounds += 1
        full = self._rounds % self.full_every == 0
        started = time.perf_counter()
        if full:
            gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("gc %s: %d collected, %.1f ms", "full" if full else "round", collected,
                      (time.perf_counter() - started) * 1000)
        return collected
