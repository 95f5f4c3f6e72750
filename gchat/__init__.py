"""gchat: a chat server engine on gevent, a chat server, a client and a benchmark."""

__version__ = "0.1.0"
