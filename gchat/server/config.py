"""Server settings: one frozen dataclass, the single source of every default.

Each field becomes a click flag and a GCHAT_<FIELD> environment variable (see cli.py);
its `help` metadata is the flag's help text.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["Settings", "redact"]

_SERVER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?")


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the chat server can be told. Durations are in seconds."""

    host: str = _opt("127.0.0.1", "Address to listen on.")
    port: int = _opt(7070, "TCP port (0 picks a free one).")
    tls_port: int | None = _opt(None, "Also listen with TLS on this port (needs --tls-cert and --tls-key).")
    tls_cert: str | None = _opt(None, "PEM certificate chain for TLS.")
    tls_key: str | None = _opt(None, "PEM private key for TLS.")
    irc_port: int = _opt(6667, "IRC port on --host (0: no IRC).")
    irc_tls_port: int | None = _opt(None, "Also serve IRC with TLS on this port (needs --tls-cert "
                                    "and --tls-key).")
    irc_name: str | None = _opt(None, "The server name IRC clients see [default: the host name, "
                                "or gchat].")
    http_port: int = _opt(7080, "HTTP port on --host: the chat page, /ws (PROTOCOL.md over "
                          "WebSocket), /metrics, /healthz (0: no HTTP).")
    https_port: int | None = _opt(None, "Also serve HTTP with TLS on this port (needs --tls-cert "
                                  "and --tls-key).")
    http_origins: str | None = _opt(None, "Origins whose pages may open /ws, comma-separated "
                                    "(https://chat.example.org); the page's own may when "
                                    "reached by address or localhost: list the DNS name you "
                                    "serve under.")
    token: str | None = _opt(None, "Require this token in hello (prefer GCHAT_TOKEN: flags show in ps).")
    registration: str = _opt("open", "Accounts (a registered nick is its password's): open (anyone "
                             "registers a nick), closed (only an operator, with gchat-admin) or "
                             "off (no accounts: every free nick is anyone's).")
    password_min_length: int = _opt(8, "Shortest password a user may register, in characters.")
    max_frame: int = _opt(65536, "Largest client frame in bytes, CR and LF included.")
    max_text: int = _opt(4096, "Longest text of say and whisper, in code points.")
    max_rooms: int = _opt(64, "Rooms one session may join.")
    rate: float = _opt(50.0, "Token bucket refill per second, per connection.")
    burst: int = _opt(100, "Token bucket size, per connection.")
    idle_timeout: float = _opt(60.0, "Close a connection silent this long (ping at half); 0 disables.")
    history_on_join: int = _opt(20, "Messages of history in the ok of join.")
    max_recover: int = _opt(500, "Most messages a join with after= recovers.")
    max_queue_bytes: int = _opt(4 * 1024 * 1024, "Outbound queue bound per session, bytes.")
    max_queue_frames: int = _opt(10_000, "Outbound queue bound per session, frames.")
    pace_limit: float = _opt(1.0, "Longest wait, per burst, for members whose queue is past half "
                             "its bound to write it, before a burst goes on without them.")
    max_clients: int = _opt(10_000, "Registered sessions at most (hello beyond: server_full).")
    max_connections: int | None = _opt(None, "Open connections at most [default: max-clients + 1000].")
    store: str = _opt("sqlite:var/gchat.db", "History store: sqlite:PATH (durable) or memory (lost on exit).")
    store_sync: str = _opt("normal", "SQLite sync: normal (fsync about once a second: a crash of the "
                           "process loses nothing, a power loss the last second) or full (fsync per "
                           "commit: nothing lost on power loss either; slower).")
    history_max: int = _opt(10_000, "Messages kept per room; the oldest are pruned.")
    max_history_rooms: int = _opt(10_000, "Rooms that keep history at most: beyond it, the history "
                                  "of the least recently written rooms without members is forgotten.")
    gc_interval: float = _opt(60.0, "Seconds between scheduled garbage collections, which keep CPython's "
                              "long full collections off the hot path; 0: CPython's own schedule.")
    backplane: str | None = _opt(None, "Join a cluster: redis://[:PASSWORD@]HOST:PORT/DB, a Redis server "
                                 "that every node shares (rooms, nicks, history); --store is then not "
                                 "used. With a password, prefer GCHAT_BACKPLANE: flags show in ps.")
    node_timeout: float = _opt(5.0, "Cluster: a node silent this long is dead; the others send "
                               "presence quit for its sessions and free their nicks.")
    grace: float = _opt(5.0, "On shutdown, how long connections may flush their goodbye.")
    log_level: str = _opt("INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.")

    def __post_init__(self) -> None:
        positive = ("max_frame", "max_text", "max_rooms", "rate", "burst", "history_on_join",
                    "max_recover", "max_queue_bytes", "max_queue_frames", "max_clients",
                    "history_max", "max_history_rooms", "password_min_length")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        if self.backplane is not None:
            _check_backplane(self.backplane)
        if self.node_timeout < 0.2:
            raise ConfigError("node-timeout must be at least 0.2 seconds")
        for name in ("idle_timeout", "grace", "gc_interval", "pace_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must not be negative")
        if self.max_frame < 2:
            raise ConfigError("max-frame must be at least 2")
        for name in ("irc_port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name.replace('_', '-')} must be from 0 (off) to 65535, "
                                  f"not {getattr(self, name)}")
        for origin in self.origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(f"http-origins lists origins like https://host[:port], "
                                  f"not {origin!r}")
        if self.irc_name is not None and not _SERVER_NAME.fullmatch(self.irc_name):
            raise ConfigError(f"irc-name must be a host name (letters, digits, dots, hyphens), "
                              f"not {self.irc_name!r}")
        if self.tls_port is not None and not (self.tls_cert and self.tls_key):
            raise ConfigError("--tls-port needs --tls-cert and --tls-key")
        if self.irc_tls_port is not None and not (self.tls_cert and self.tls_key):
            raise ConfigError("--irc-tls-port needs --tls-cert and --tls-key")
        if self.https_port is not None and not (self.tls_cert and self.tls_key):
            raise ConfigError("--https-port needs --tls-cert and --tls-key")
        if self.store != "memory" and not (self.store.startswith("sqlite:") and self.store_path):
            raise ConfigError(f"--store must be memory or sqlite:PATH, not {self.store!r}")
        if self.registration not in ("open", "closed", "off"):
            raise ConfigError(f"--registration must be open, closed or off, not {self.registration!r}")
        if self.store_sync not in ("full", "normal"):
            raise ConfigError(f"--store-sync must be full or normal, not {self.store_sync!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"unknown log level {self.log_level!r}")

    @property
    def store_path(self) -> str:
        """The SQLite file of `store` ("" for the memory store)."""
        return self.store.removeprefix("sqlite:") if self.store.startswith("sqlite:") else ""

    @property
    def origins(self) -> list[str]:
        """The --http-origins, each without a trailing slash."""
        return [origin.strip().rstrip("/") for origin in (self.http_origins or "").split(",")
                if origin.strip()]

    @property
    def irc_server_name(self) -> str:
        """The server name of IRC numerics and prefixes: --irc-name, else the host
        name when it is a valid one, else gchat."""
        if self.irc_name:
            return self.irc_name
        host = socket.gethostname()
        return host if _SERVER_NAME.fullmatch(host) else "gchat"

    @property
    def connection_limit(self) -> int:
        """Open connections allowed: room for unregistered ones beyond max_clients."""
        if self.max_connections is not None:
            return self.max_connections
        return self.max_clients + 1000

    def limits(self) -> dict[str, int | float]:
        """The `limits` object of hello's ok (PROTOCOL.md 3)."""
        names = ("max_frame", "max_text", "max_rooms", "rate", "burst", "idle_timeout",
                 "history_on_join", "max_recover", "max_queue_bytes", "max_queue_frames",
                 "max_clients")
        return {name: _number(getattr(self, name)) for name in names}

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) of every setting, in declaration order."""
        return [(f.name, f.default, f.metadata["help"]) for f in fields(cls)]


def _check_backplane(url: str) -> None:
    """A Redis URL: redis:// or rediss:// with a host, an optional numeric port and
    database, or unix:///path (PASSWORD never echoed back)."""
    parts = urlsplit(url)
    problem = None
    if parts.scheme not in ("redis", "rediss", "unix"):
        problem = "must be a redis://HOST:PORT/DB URL"
    elif parts.scheme == "unix":
        problem = None if parts.path else "needs a socket path: unix:///PATH"
    elif not parts.hostname:
        problem = "needs a host"
    else:
        try:
            parts.port  # noqa: B018  # raises ValueError for a port that is not a number
        except ValueError:
            problem = "has a port that is not a number"
        if problem is None and parts.path not in ("", "/") and not parts.path[1:].isdigit():
            problem = "has a database that is not a number (redis://HOST:PORT/0)"
    if problem is not None:
        raise ConfigError(f"--backplane {problem}, not {redact(url)!r}")


def redact(url: str) -> str:
    """`url` with any password replaced by ***, fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def _number(value: int | float) -> int | float:
    """50.0 -> 50: integral values are sent as JSON integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
