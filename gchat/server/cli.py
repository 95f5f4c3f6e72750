"""The `gchat-server` command: click flags and GCHAT_* variables for every Setting.

Importing this module does not monkey-patch; `python -m gchat.server` does, first.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
from typing import Any

import click
import gevent

from ..errors import ConfigError, StoreError
from .chat import ChatServer
from .cluster import ClusterServer
from .config import Settings
from .gcpolicy import GcPolicy

__all__ = ["main"]

log = logging.getLogger("gchat.server")

_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}


def _settings_options(command: Any) -> Any:
    """Decorate `command` with one option per Settings field, in declaration order."""
    annotations = Settings.__annotations__
    for name, default, help_text in reversed(Settings.options()):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, type=_TYPES[annotations[name]], default=default,
                               show_default=default is not None, show_envvar=True,
                               help=help_text)(command)
    return command


def _raise_fd_limit() -> None:
    """Every connection is a file descriptor: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


@click.command(context_settings={"auto_envvar_prefix": "GCHAT",
                                 "help_option_names": ["-h", "--help"]})
@_settings_options
def main(**options: Any) -> None:
    """Run the gchat server (PROTOCOL.md version 1) until SIGTERM or Ctrl-C.

    Every option can also be set with an environment variable GCHAT_<OPTION>,
    for example GCHAT_IDLE_TIMEOUT=30.
    """
    try:
        settings = Settings(**options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_fd_limit()
    try:
        server = ClusterServer(settings) if settings.backplane else ChatServer(settings)
        server.start()
    except (ConfigError, StoreError) as exc:
        click.echo(f"gchat-server: {exc}", err=True)
        sys.exit(1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.request_shutdown)
    if settings.gc_interval > 0:
        GcPolicy(settings.gc_interval).start()
    for (host, port), door in zip(server.addresses, server.doors, strict=True):
        log.info("%s listening on %s:%d (%s)", server.name, host, port, door)
    server.wait()
    sys.exit(0)
