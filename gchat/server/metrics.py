"""Metrics: what a server counts for its operators, in Prometheus's text format.

Strategy: the official prometheus_client, with a registry per server (not the
library's global one: tests run several servers in one process). Counters and
histograms are bumped where things happen, once per batch or per broadcast, never
once per member on the hot path; live gauges (connections by transport, registered
sessions, rooms, queued output) are read from the server when /metrics is asked for,
so keeping them costs nothing between scrapes. docs/web.md lists every metric.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .chat import ChatServer

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def transport_of(door: str) -> str:
    """The transport label of a session's door: json, irc (any capabilities), ws, http."""
    return door.partition("+")[0]


class Metrics:
    """One server's metrics; `render()` is the body of GET /metrics."""

    def __init__(self, server: ChatServer) -> None:
        disable_created_metrics()  # no `_created` series beside every counter: noise here
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.says = Counter("gchat_says", "Messages stored and delivered (say, PRIVMSG, NOTICE).",
                            registry=registry)
        self.deliveries = Counter("gchat_deliveries", "Messages queued to members: one per member "
                                  "per message, the sender included.", registry=registry)
        self.whispers = Counter("gchat_whispers", "Whispers (private messages) delivered.",
                                registry=registry)
        self.errors = Counter("gchat_errors", "Error replies to JSON requests, by code.", ["code"],
                              registry=registry)
        self.rate_limited = Counter("gchat_rate_limited", "Requests refused (JSON) or delayed "
                                    "(IRC fake lag) by the rate limit, by transport.",
                                    ["transport"], registry=registry)
        self.slow_consumers = Counter("gchat_slow_consumer_drops", "Sessions dropped because they "
                                      "did not read what they were sent.", registry=registry)
        self.commit_seconds = Histogram("gchat_store_commit_seconds", "Time to store one batch of "
                                        "messages durably (one server's store).",
                                        buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("gchat_batch_size", "Messages per stored batch (group commit).",
                                    buckets=_SIZE_BUCKETS, registry=registry)
        self.backplane_seconds = Histogram("gchat_backplane_round_trip_seconds", "A cluster node's "
                                           "round trip to Redis for one batch of says.",
                                           buckets=_LATENCY_BUCKETS, registry=registry)
        registry.register(_Live(server))

    def committed(self, messages: int, seconds: float) -> None:
        """A batch of `messages` was stored in `seconds`."""
        self.commit_seconds.observe(seconds)
        self.batch_size.observe(messages)
        self.says.inc(messages)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Live(Collector):
    """Gauges read from the server at scrape time."""

    def __init__(self, server: ChatServer) -> None:
        self._server = server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        server = self._server
        sessions = list(server.sessions())
        connections = GaugeMetricFamily("gchat_connections", "Open connections, by transport.",
                                        labels=["transport"])
        by_transport = Tally(transport_of(session.door) for session in sessions)
        for transport in ("json", "irc", "ws", "http"):
            connections.add_metric([transport], by_transport.get(transport, 0))
        yield connections
        yield GaugeMetricFamily("gchat_registered_sessions", "Sessions with a nick, this server's.",
                                value=len(server.nicks))
        yield GaugeMetricFamily("gchat_rooms", "Rooms with members on this server.",
                                value=len(server.rooms))
        yield GaugeMetricFamily("gchat_queued_bytes", "Bytes accepted for sessions and not yet "
                                "written to their sockets.",
                                value=sum(session.queued_bytes for session in sessions))
