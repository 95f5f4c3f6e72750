"""LogThrottle as a pure helper: an injected clock, a real logger, no sleeping."""

from __future__ import annotations

import logging

import pytest

from gchat.logthrottle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock, caplog) -> LogThrottle:
    caplog.set_level(logging.INFO, logger="gchat.test.throttle")
    return LogThrottle(logging.getLogger("gchat.test.throttle"), 5.0, clock=clock)


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_the_first_line_is_written_then_one_per_interval_with_the_count(throttle, clock, caplog):
    assert throttle.error("batch", "cannot store %d messages: %s", 3, "disk full")
    for _ in range(154):  # 155 failures in 3 s, as on the full disk of issue 12
        clock.now += 3 / 155
        assert not throttle.error("batch", "cannot store %d messages: %s", 3, "disk full")
    assert lines(caplog) == ["cannot store 3 messages: disk full"]
    clock.now = 105.0  # interval seconds after the first line
    assert throttle.error("batch", "cannot store %d messages: %s", 1, "disk full")
    assert lines(caplog)[1:] == ["cannot store 1 messages: disk full (154 more like this)"]
    assert caplog.records[1].levelno == logging.ERROR


def test_a_line_after_a_quiet_spell_has_no_count(throttle, clock, caplog):
    throttle.warning("accept", "accept failed")
    clock.now += 60
    throttle.warning("accept", "accept failed")
    assert lines(caplog) == ["accept failed", "accept failed"]


def test_each_kind_has_its_own_budget(throttle, clock, caplog):
    throttle.warning("a", "first a")
    throttle.warning("b", "first b")  # another kind is not held back by "a"
    throttle.warning("a", "second a")
    clock.now += 4.9
    throttle.warning("b", "second b")
    clock.now += 0.1
    throttle.warning("a", "third a")
    assert lines(caplog) == ["first a", "first b", "third a (1 more like this)"]


def test_the_level_is_the_callers(throttle, caplog):
    throttle.log(logging.INFO, "k", "%s%%", "100")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "100%")]
