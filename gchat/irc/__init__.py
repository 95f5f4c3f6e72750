"""The IRC gateway: gchat spoken as IRC (issue 13, ../shared/IRC.md).

`codec` is the pure line codec (bytes in, messages out; messages in, bytes out); the
door itself, a session on the chat state, is gchat/server/irc.py. Importing this
package never monkey-patches anything and imports neither socket nor gevent.
"""

from . import codec
from .codec import *  # noqa: F403  # the codec's public names are the package's

__all__ = codec.__all__
