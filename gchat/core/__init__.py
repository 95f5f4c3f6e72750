"""The gchat engine: sessions, a listener, a connector and rooms, on gevent.

Usable without the chat server. Importing it never monkey-patches anything.
"""

from .connector import Connector
from .framing import LineFramer
from .listener import Listener
from .room import Room, RoomMaster
from .session import Session, SessionLimits

__all__ = ["Connector", "LineFramer", "Listener", "Room", "RoomMaster", "Session", "SessionLimits"]
