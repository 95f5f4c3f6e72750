"""The per-connection token bucket of PROTOCOL.md section 2. Pure: time is passed in."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Starts full with `burst` tokens and refills at `rate` tokens per second."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def _refilled(self, now: float) -> float:
        tokens = self._tokens
        if tokens < self.burst:
            tokens = min(float(self.burst), tokens + (now - self._stamp) * self.rate)
        return tokens

    def has_token(self, now: float) -> bool:
        """Whether `take(now)`, or a take later, would succeed; takes nothing."""
        return self._refilled(now) >= 1.0

    def take(self, now: float) -> bool:
        """Take one token at time `now` (seconds, monotonic); False if there is none."""
        tokens = self._refilled(now)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False
