"""The gchat chat server, built on the engine in gchat.core."""

from .chat import ChatRoom, ChatServer
from .config import Settings
from .history import HistoryStore, MemoryHistory
from .member import ChatMember
from .session import ChatSession

__all__ = ["ChatMember", "ChatRoom", "ChatServer", "ChatSession", "HistoryStore", "MemoryHistory", "Settings"]
