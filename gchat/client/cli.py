"""The `gchat-client` command: interactive on a terminal, line by line on a pipe."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
from gevent import ssl as gssl

from ..errors import ConnectError
from .chat import ChatClient, View
from .commands import Command, explain
from .connection import RequestFailed
from .view import JsonView, PlainView, TerminalView

__all__ = ["main"]

SCRIPT_RECONNECT_WAIT = 30.0  # seconds a script waits for a lost connection to come back


def _addresses(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, int]]:
    """HOST:PORT values as (host, port) pairs."""
    addresses = []
    for value in values:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise click.BadParameter(f"{value!r} is not HOST:PORT")
        addresses.append((host, int(port)))
    return addresses


@click.command(context_settings={"auto_envvar_prefix": "GCHAT", "help_option_names": ["-h", "--help"]})
@click.option("--nick", required=True, help="Your nick: a letter, then up to 31 letters, digits, _ or -.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Server address.")
@click.option("--port", default=7070, show_default=True, type=click.IntRange(1, 65535), help="Server port.")
@click.option("--fallback", "fallbacks", multiple=True, callback=_addresses, metavar="HOST:PORT",
              help="Another node of the same cluster, tried in turn when the server cannot be "
                   "reached (repeatable).")
@click.option("--token", default=None, help="The server's token, if it needs one (prefer GCHAT_TOKEN).")
@click.option("--password", default=None, show_envvar=True,
              help="Log in to the account of --nick with this password. Prefer the variable "
                   "GCHAT_PASSWORD: a flag shows in ps and in the shell's history.")
@click.option("--tls", is_flag=True, help="Connect with TLS (to the server's --tls-port).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Trust this PEM certificate (a self-signed server) instead of the system's.")
@click.option("--room", default="lobby", show_default=True, help="Room to join at start ('' for none).")
@click.option("--json", "as_json", is_flag=True, help="Print each server event as one JSON line (scripts).")
def main(nick: str, host: str, port: int, fallbacks: list[tuple[str, int]], token: str | None,
         password: str | None, tls: bool, ca_file: str | None, room: str, as_json: bool) -> None:
    """Chat on a gchat server.

    On a terminal: type to talk, /help for commands. On a pipe: reads commands line by
    line, exits at end of input once each is answered (status 1 if any failed).
    """
    context = gssl.create_default_context(cafile=ca_file) if (tls or ca_file) else None
    options: dict[str, Any] = {"token": token, "password": password, "ssl_context": context,
                               "fallbacks": fallbacks}
    if sys.stdin.isatty() and sys.stdout.isatty() and not as_json:
        sys.exit(_interactive(host, port, nick, room, options))
    view = JsonView() if as_json else PlainView()
    sys.exit(_script(ChatClient(host, port, nick, view, **options), view, room))


def _start(client: ChatClient, view: View, room: str) -> bool:
    try:
        client.start(room)
    except ConnectError as exc:
        view.error(f"cannot connect to {exc}")
        return False
    except RequestFailed as exc:
        view.error(f"the server refused {client.nick!r}: "
                   f"{explain(exc, Command('hello', (client.nick,)), client)}")
        return False
    return True


def _script(client: ChatClient, view: PlainView, room: str) -> int:
    from gevent.fileobject import FileObjectPosix

    if not _start(client, view, room):
        return 1
    failed = False
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    for raw in stdin:
        if client.closed.is_set():
            break
        if not client.wait_online(SCRIPT_RECONNECT_WAIT):
            if not client.closed.is_set():  # else the client said why it stopped
                view.error("the connection is lost and did not come back: giving up")
            return 1
        failed |= not client.run(raw.decode("utf-8", errors="replace"))
    client.close()
    return 1 if failed else 0


def _interactive(host: str, port: int, nick: str, room: str, options: dict[str, Any]) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.patch_stdout import patch_stdout

    from .editor import MaskPasswords, SecretlessHistory

    async def chat() -> int:
        view = TerminalView(asyncio.get_running_loop())
        view.me = nick
        client = ChatClient(host, port, nick, view, **options)
        with patch_stdout(raw=True):
            if not _start(client, view, room):
                await asyncio.sleep(0)  # let the error be printed
                return 1
            view.notice("connected: type to talk, /help for commands, /quit or Ctrl-D to leave")
            prompt: PromptSession[str] = PromptSession(history=SecretlessHistory(),
                                                       input_processors=[MaskPasswords()])
            while not client.closed.is_set():
                try:
                    line = await prompt.prompt_async(lambda: FormattedText(view.prompt()))
                except (EOFError, KeyboardInterrupt):
                    break
                client.run(line)  # a gevent wait: the prompt resumes once it is answered
                view.me = client.nick
            client.close()
            await asyncio.sleep(0)
        return 0

    return asyncio.run(chat())

