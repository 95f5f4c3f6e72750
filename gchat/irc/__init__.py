"""The IRC gateway: gchat spoken as IRC (issue 13, ../shared/IRC.md).

`codec` is the pure line codec (bytes in, messages out; messages in, bytes out).
Importing this package never monkey-patches anything and imports neither socket nor gevent.
"""

from .codec import (
    CLIENT_TAGS_MAX,
    MAX_LINE,
    MAX_PARAMS,
    TAGS_MAX,
    BadLine,
    IrcFramer,
    Message,
    casefold_ascii,
    line,
    parse,
    render,
    render_tags,
    split_text,
    text_budget,
    text_line,
)

__all__ = [
    "CLIENT_TAGS_MAX",
    "MAX_LINE",
    "MAX_PARAMS",
    "TAGS_MAX",
    "BadLine",
    "IrcFramer",
    "Message",
    "casefold_ascii",
    "line",
    "parse",
    "render",
    "render_tags",
    "split_text",
    "text_budget",
    "text_line",
]
