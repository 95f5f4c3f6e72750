"""What the user types: a plain line says it to the current room, a /command does the
rest. Pure: `parse` takes a line and returns a Command (or an error to show), and
`explain` turns a refused request into plain words with a hint."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .chat import ChatClient
    from .connection import RequestFailed

__all__ = ["HELP", "Command", "explain", "parse", "secret_start"]

HELP = """\
Type a line to say it in the current room (start it with // to say a line that starts with /).
  /join ROOM        join ROOM and make it current      /leave [ROOM]   leave ROOM (or the current one)
  /switch ROOM      make a joined ROOM current         /msg NICK TEXT  whisper TEXT to NICK
  /nick NAME        change your nick                   /rooms [AFTER]  list the rooms (after AFTER)
  /who [ROOM]       who is in ROOM (@: operators)      /history [N]    the last N messages (default 20)
  /topic [TEXT]     show or set the room's topic       /kick NICK [WHY] put NICK out (operators)
  /mode +o|-o NICK  make NICK an operator or not       /mode +t|-t     only operators set the topic, or all
  /register PASSWORD  make your nick an account: from then on only PASSWORD logs in as it
  /password OLD NEW   change your account's password   /drop PASSWORD  delete your account
  /help             this help                          /quit           leave (Ctrl-D too)"""

# name: (the least and the most arguments, usage); the TEXT of /msg takes the rest of the line
_COMMANDS: dict[str, tuple[int, int, str]] = {
    "join": (1, 1, "/join ROOM"), "leave": (0, 1, "/leave [ROOM]"), "switch": (1, 1, "/switch ROOM"),
    "msg": (2, 2, "/msg NICK TEXT"), "nick": (1, 1, "/nick NAME"), "rooms": (0, 1, "/rooms [AFTER]"),
    "who": (0, 1, "/who [ROOM]"), "history": (0, 1, "/history [N]"), "quit": (0, 0, "/quit"),
    "help": (0, 0, "/help"), "topic": (0, 1, "/topic [TEXT]"), "kick": (1, 2, "/kick NICK [WHY]"),
    "mode": (1, 2, "/mode +o|-o NICK or /mode +t|-t"),
    "register": (1, 1, "/register PASSWORD"), "password": (2, 2, "/password OLD NEW"),
    "drop": (1, 1, "/drop PASSWORD"),
}
# Commands whose arguments are passwords: never shown, kept in history or logged.
_SECRET = re.compile(r"/(?:register|password|drop)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    """A parsed line: `name` (say for plain text) and its `args`, or an `error`."""

    name: str
    args: tuple[str, ...] = field(default=(), repr=False)  # a password, for some commands
    error: str = ""
    help: str = HELP


def parse(line: str) -> Command | None:
    """The command a typed line means; None for a blank line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if not line.startswith("/") or line.startswith("//"):
        return Command("say", (line[1:] if line.startswith("//") else line,))
    # Split at the first whitespace of any kind, as _SECRET does: a tab after /register
    # must not leave the password in a name that an error would show.
    words = line[1:].split(None, 1)
    name, rest = (words[0], words[1] if len(words) > 1 else "") if words else ("", "")
    name = name.lower()
    if name not in _COMMANDS:
        return Command(name, error=f"there is no command /{name[:32]}: type /help for the list")
    least, most, usage = _COMMANDS[name]
    if name == "topic":  # the whole rest is the topic
        return Command(name, (rest.strip(),) if rest.strip() else ())
    if name in ("register", "drop"):  # the whole rest is the password
        words = [rest.strip()] if rest.strip() else []
    elif name == "password":  # OLD (no spaces), then NEW: the rest, trimmed as /register's
        words = rest.strip().split(None, 1)
        words[1:] = [word.strip() for word in words[1:]]
    elif name in ("msg", "kick"):  # the last argument takes the rest
        words = rest.split(None, 1)
    else:
        words = rest.split()
    if not least <= len(words) <= most:
        return Command(name, error=f"usage: {usage}")
    if name == "history" and words and not (words[0].isdigit() and 1 <= int(words[0]) <= 100):
        return Command(name, error="usage: /history [N], N from 1 to 100")
    if name == "mode" and (words[0] not in ("+o", "-o", "+t", "-t")
                           or (len(words) == 2) != (words[0][1] == "o")):
        return Command(name, error=f"usage: {usage}")
    return Command(name, tuple(words))


def secret_start(line: str) -> int | None:
    """Where the passwords of a /register, /password or /drop line start (the line
    editor masks them from there), or None for any other line."""
    match = _SECRET.match(line)
    return match.end() if match else None


_HINTS = {
    "not_in_room": "you are not in {room}: /join {room} first",
    "no_room": "you are in no room: /join one first",
    "invalid_room": "{room!r} is not a room name: letters, digits, _ . - (up to 64), maybe after a #",
    "no_such_room": "there is no room {room}: /rooms lists them",
    "too_many_rooms": "you are in too many rooms: /leave one first",
    "invalid_nick": "{nick!r} is not a nick: a letter, then up to 31 letters, digits, _ or -",
    "nick_taken": "{nick} is taken: pick another",
    "no_such_nick": "nobody is called {nick}: /who shows who is in a room",
    "text_too_long": "that message is too long: split it",
    "rate_limited": "slow down: the server allows only so many messages a second",
    "disconnected": "not connected: the client is reconnecting, try again in a moment",
    "timeout": "the server did not answer in time: try again",
    "unavailable": "the server cannot store messages right now: try again later",
    "not_operator": "only operators of {room} may do that",
    "account_required": "{nick} is a registered nick: log in with its password (--password, or "
                        "better GCHAT_PASSWORD), or pick another nick",
    "bad_password": "wrong password for {nick} (or {nick} is not an account)",
    "weak_password": "that password is too short: {message}",
    "account_exists": "{nick} is registered already",
    "registration_closed": "this server does not let users register accounts",
    "not_logged_in": "you are not logged in to an account: connect with --password (or "
                     "GCHAT_PASSWORD) first",
}


def explain(failure: RequestFailed, command: Command, client: ChatClient) -> str:
    """A refused request in plain words, with a hint; the server's words otherwise."""
    args = command.args
    room = args[0] if args and command.name in ("join", "leave", "switch", "who") else client.current
    nick = args[0] if args and command.name in ("hello", "nick", "msg", "kick") else client.nick
    if command.name == "mode" and len(args) == 2:
        nick = args[1]
    hint = _HINTS.get(failure.code)
    if hint is None:  # too_many_attempts among them: the server says how long to wait
        if command.name == "hello":
            return failure.message or failure.code
        return f"/{command.name} failed: {failure.message or failure.code}"
    return hint.format(room=room, nick=nick, message=failure.message)
