"""The gchat engine: sessions, a listener, a connector and rooms, on gevent.

Usable without the chat server. Importing it never monkey-patches anything.
"""

from .connector import Connector
from .framing import LineFramer
from .listener import Listener
from .room import Once, Room, RoomMaster
from .session import Flusher, Session, SessionLimits

__all__ = ["Connector", "Flusher", "LineFramer", "Listener", "Once", "Room", "RoomMaster", "Session",
           "SessionLimits"]
