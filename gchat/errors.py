"""Every exception gchat raises on purpose derives from :class:`GchatError`.

    GchatError
    ├── ConnectError         the Connector could not reach or greet a server
    ├── ConfigError          a setting is invalid or the server cannot start
    ├── StoreError           the history store cannot open, read or write
    ├── BackplaneError       the cluster's Redis cannot be reached or failed
    └── RequestError         a request failed; carries its wire error code
                             (PROTOCOL.md section 2), becomes {"op":"error"}
"""

from __future__ import annotations


class GchatError(Exception):
    """Base class of every gchat error."""


class ConnectError(GchatError):
    """A connection could not be established."""


class ConfigError(GchatError):
    """Invalid configuration, or a resource the server needs is unavailable."""


class StoreError(GchatError):
    """The history store failed: at startup the server exits, later the request fails."""


class BackplaneError(GchatError):
    """The cluster backplane (Redis) failed: at startup the server exits, later the
    request fails with `unavailable`."""


class RequestError(GchatError):
    """A request failed with the wire error `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
