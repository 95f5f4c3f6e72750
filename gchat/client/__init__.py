"""The gchat terminal client, on the engine's Connector and Session.

`python -m gchat.client` (or `bin/gchat-client`) runs it; importing it never
monkey-patches.
"""

from .chat import ChatClient
from .connection import ClientSession, RequestFailed

__all__ = ["ChatClient", "ClientSession", "RequestFailed"]
