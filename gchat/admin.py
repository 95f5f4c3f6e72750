"""The `gchat-admin` command: create, list, reset and delete accounts in a gchat
server's store, whether the server is stopped or running.

Strategy: the store is picked as the server picks it (`--store sqlite:PATH`, default
the server's own, or `--backplane redis://...`, from the same GCHAT_ variables), and
every change goes through the server's own `Accounts` service as an operator's (no
address: no closed-registration check, no minimum length, no rate limit), so the
hashes are the server's. A running server reads an account from the store at every login, so
a change takes effect at the next login; sessions already logged in stay.

A running server holds an flock on `PATH.lock` and its own connections to PATH, so
`SqliteHistory` (which takes that lock) cannot open the file then. `SqliteAccounts`
opens it with plain sqlite3 instead, as a second process may: WAL mode lets its short
transactions and the server's run side by side, and a busy timeout waits out the
server's commits. It runs the same statements as SqliteHistory's account methods
(deleting an account deletes its private logs too: `delete_account_rows`). A
file that does not exist yet (or predates accounts) is made (or upgraded) by
SqliteHistory itself, which creates the whole schema, and closed again.

Passwords are never taken from a flag (flags show in `ps` and shell history): a hidden
prompt asks twice on a terminal, or `--password-stdin` reads one line. They are never
printed, and `list` shows names and creation times, never hashes.

Importing this module does not monkey-patch; nothing here needs it (one blocking call
at a time).
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .errors import BackplaneError, ConfigError, RequestError, StoreError
from .protocol import valid_nick
from .server.accounts import Account, Accounts, AccountStore
from .server.config import Settings
from .server.sqlite_store import delete_account_rows, refuse_foreign

__all__ = ["SqliteAccounts", "main", "open_store"]

BUSY_TIMEOUT = 5.0  # seconds to wait for a running server's commit to finish
_DEFAULTS = {name: default for name, default, _ in Settings.options()}


class SqliteAccounts:
    """The accounts of a gchat SQLite database (an AccountStore), through a plain
    sqlite3 connection: usable while a server has the file open."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"there is no history database {self.path} (a server creates "
                                 "it when it first starts, and so does gchat-admin create)")
            self._create()
        elif self._version() < _schema_version():
            self._create()  # an older gchat's file gains the accounts table, as at a start
        self._conn = self._connect()
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(self._describe(exc)) from exc
        if version > _schema_version():
            self._conn.close()
            raise StoreError(f"history database {self.path} was written by a newer gchat "
                             f"(schema {version}, this one reads {_schema_version()})")
        if "accounts" not in tables:
            self._conn.close()
            raise StoreError(f"{self.path} is a SQLite database, but not gchat's")

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create a file by accident (a mistyped path is an error).
        try:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                   isolation_level=None, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc

    def _version(self) -> int:
        """The file's schema version (0: new); StoreError if it is not a SQLite
        database, or not gchat's."""
        if self.path.is_dir():
            raise StoreError(f"cannot open history database {self.path}: it is a directory")
        conn = self._connect()
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            # Refused before SqliteHistory opens it (which would make it WAL first).
            refuse_foreign(conn, self.path)
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc
        finally:
            conn.close()
        return version

    def _create(self) -> None:
        """Create (or upgrade) the whole schema as the server would, with its lock held
        (StoreError if a server holds it: that server upgrades the file itself)."""
        from .server.sqlite_store import SqliteHistory

        # No retention here: the server's --history-max prunes when the server opens it.
        SqliteHistory(self.path, history_max=2**62).close()

    def _describe(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return (f"history database {self.path} stayed locked for {BUSY_TIMEOUT:g} s "
                    "(another program is writing it): try again")
        if "not a database" in text:
            return f"{self.path} is not a SQLite database"
        return f"history database {self.path}: {text}"

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc

    # -- an AccountStore (accounts.py), the statements of SqliteHistory's --------------------

    def account(self, key: str) -> Account | None:
        row = self._execute("SELECT name, hash, created FROM accounts WHERE key = ?",
                            (key,)).fetchone()
        return Account(*row) if row is not None else None

    def create_account(self, account: Account) -> bool:
        return self._execute(
            "INSERT OR IGNORE INTO accounts (key, name, hash, created) VALUES (?, ?, ?, ?)",
            (account.key, account.name, account.hash, account.created)).rowcount > 0

    def update_account(self, account: Account) -> bool:
        return self._execute("UPDATE accounts SET hash = ? WHERE key = ?",
                             (account.hash, account.key)).rowcount > 0

    def delete_account(self, key: str) -> bool:
        """The account and its private logs, in one transaction (as the server does)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = delete_account_rows(self._conn, key)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc
        return deleted

    def accounts(self) -> list[Account]:
        rows = self._execute("SELECT name, hash, created FROM accounts ORDER BY key").fetchall()
        return [Account(*row) for row in rows]

    def close(self) -> None:
        self._conn.close()


def _schema_version() -> int:
    from .server.sqlite_store import SCHEMA_VERSION

    return SCHEMA_VERSION


def _redis_accounts(url: str) -> AccountStore:
    """A cluster's accounts, through the backplane's own account methods. It is not
    started: the admin does not join the cluster as a node, it only sends those
    commands (its connection goes with the process)."""
    from .server.backplane import RedisBackplane

    return RedisBackplane(url, node_timeout=_DEFAULTS["node_timeout"],
                          history_max=_DEFAULTS["history_max"],
                          max_history_rooms=_DEFAULTS["max_history_rooms"],
                          on_payload=lambda payload: None, state=lambda: ([], []),
                          on_resync=lambda conflicts, reconnected: None)


@contextmanager
def open_store(store: str, backplane: str | None, *, create: bool = False
               ) -> Iterator[AccountStore]:
    """The account store a server with these --store and --backplane settings uses
    (`create`: a SQLite file that does not exist yet is made); ConfigError for
    settings the server would refuse, StoreError if the file cannot be used."""
    settings = Settings(store=store, backplane=backplane)  # the server's own checks
    if settings.backplane:
        yield _redis_accounts(settings.backplane)
        return
    if settings.store == "memory":
        raise ConfigError("--store memory keeps accounts in the server's memory only: "
                          "there is nothing to administer")
    opened = SqliteAccounts(settings.store_path, create=create)
    try:
        yield opened
    finally:
        opened.close()


# -- the command ------------------------------------------------------------------------------

class _Failed(click.ClickException):
    """One line on stderr, `gchat-admin: WHY`, and exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"gchat-admin: {self.message}", err=True)


def _read_password(from_stdin: bool) -> str:
    """A new password: one line of stdin, or asked twice on the terminal, hidden."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise _Failed("--password-stdin read no password (an empty line or no input)")
        return password
    if not sys.stdin.isatty():
        raise _Failed("no terminal to ask for the password on: give it with --password-stdin")
    password = str(click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True))
    if not password:
        raise _Failed("an empty password")
    return password


def _check_nick(nick: str) -> None:
    if not valid_nick(nick):
        raise _Failed(f"{nick[:80]!r} is not a nick: a letter, then up to 31 letters, "
                      "digits, _ or -")


@contextmanager
def _service(where: _Where, *, create: bool = False) -> Iterator[Accounts]:
    """The Accounts service over the chosen store; every failure one clear line."""
    accounts: Accounts | None = None
    try:
        with open_store(where.store, where.backplane, create=create) as store:
            accounts = Accounts(store, registration="closed")
            yield accounts
    except RequestError as exc:
        raise _Failed(exc.message) from None
    except (ConfigError, StoreError, BackplaneError) as exc:
        raise _Failed(str(exc)) from None
    finally:
        if accounts is not None:
            accounts.close()


def _created(account: Account) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(account.created / 1000))


class _Where:
    """The store options, given to every command."""

    def __init__(self, store: str, backplane: str | None) -> None:
        self.store, self.backplane = store, backplane


def _store_options(command: Any) -> Any:
    """--store and --backplane, as the server takes them (GCHAT_STORE, GCHAT_BACKPLANE)."""
    def wrapped(store: str, backplane: str | None, **kwargs: Any) -> Any:
        return command(_Where(store, backplane), **kwargs)

    wrapped = functools.update_wrapper(wrapped, command)
    wrapped = click.option(
        "--backplane", default=None, show_envvar=True, envvar="GCHAT_BACKPLANE",
        help="A cluster's Redis, redis://[:PASSWORD@]HOST:PORT/DB (then --store is not used; "
             "with a password prefer GCHAT_BACKPLANE: flags show in ps).")(wrapped)
    return click.option(
        "--store", default=_DEFAULTS["store"], show_default=True, show_envvar=True,
        envvar="GCHAT_STORE",
        help="The server's store: sqlite:PATH (its file, the server running or not).")(wrapped)


_PASSWORD_STDIN = click.option("--password-stdin", is_flag=True,
                               help="Read the password from the first line of standard input "
                                    "(for scripts) instead of asking for it.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage the accounts of a gchat server (stopped or running): a registered nick
    belongs to whoever knows its password.

    Each command takes the server's own --store or --backplane (or GCHAT_STORE,
    GCHAT_BACKPLANE). Passwords are asked for on the terminal, hidden, or read with
    --password-stdin; never give one as an argument. Changes take effect at the
    next login.
    """


@main.command()
@click.argument("nick")
@_PASSWORD_STDIN
@_store_options
def create(where: _Where, nick: str, password_stdin: bool) -> None:
    """Register NICK as an account (whatever the server's --registration and
    --password-min-length)."""
    _check_nick(nick)
    with _service(where, create=True) as accounts:
        if accounts.registered(nick) is not None:  # before asking for a password in vain
            raise RequestError("account_exists", f"{nick} is registered already")
        password = _read_password(password_stdin)
        account = accounts.register(nick, password)
    click.echo(f"created account {account.name}")


@main.command("list")
@_store_options
def list_accounts(where: _Where) -> None:
    """List the accounts: name and creation time (local), sorted by name."""
    with _service(where) as accounts:
        found = accounts.store.accounts()
    if not found:
        click.echo("no accounts", err=True)
    width = max((len(account.name) for account in found), default=0)
    for account in found:
        click.echo(f"{account.name:<{width}}  {_created(account)}")


@main.command()
@click.argument("nick")
@_PASSWORD_STDIN
@_store_options
def reset(where: _Where, nick: str, password_stdin: bool) -> None:
    """Give account NICK a new password (the old one stops working)."""
    _check_nick(nick)
    with _service(where) as accounts:
        if accounts.registered(nick) is None:  # before asking for a password in vain
            raise RequestError("no_such_account", f"there is no account {nick}")
        password = _read_password(password_stdin)
        account = accounts.change_password(nick, password)
    click.echo(f"reset the password of {account.name}")


@main.command()
@click.argument("nick")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for a confirmation.")
@_store_options
def delete(where: _Where, nick: str, yes: bool) -> None:
    """Delete account NICK: the nick is anyone's again (sessions logged in stay)."""
    _check_nick(nick)
    with _service(where) as accounts:
        account = accounts.registered(nick)
        if account is None:
            raise RequestError("no_such_account", f"there is no account {nick}")
        if not yes:
            if not sys.stdin.isatty():
                raise _Failed(f"not deleting {account.name} without asking: add --yes")
            click.confirm(f"Delete account {account.name}?", abort=True, err=True)
        accounts.drop(nick)
    click.echo(f"deleted account {account.name}")

if __name__ == "__main__":  # python -m gchat.admin (bin/gchat-admin)
    main(prog_name="gchat-admin")
