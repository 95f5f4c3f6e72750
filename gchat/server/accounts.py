"""Accounts: a registered nick belongs to whoever knows its password, on every door.

Strategy: an account is a nick and a password, kept in the durable store (SQLite by
default, Redis on a cluster, a dict with --store memory) as a slow salted hash:
scrypt from the standard library (OpenSSL's), N=2**14, r=8, p=1, a 16-byte salt,
about 50 ms and 16 MiB per hash. scrypt needs no dependency, is memory-hard like
argon2, and OpenSSL's releases the GIL, so hashing runs in a small thread pool while
the event loop goes on serving everyone else.

Guessing is slow three ways: every check costs a hash; failed logins take tokens from
a bucket per account and one per address (`LoginGuard`), and an empty bucket refuses
before any hash is computed; at most HASHES_QUEUED checks wait for the pool, so a flood
of logins cannot queue unbounded work. Hashes are compared with hmac.compare_digest.
A password is never logged, echoed or kept after the check.

`Accounts` is the one place the doors go through: register, login, change_password,
drop. Store errors propagate as StoreError / BackplaneError (the doors answer
`unavailable`), refusals as RequestError with the codes of docs/protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

from gevent.threadpool import ThreadPool

from ..errors import RequestError
from ..protocol import nick_key
from .ratelimit import TokenBucket

__all__ = [
    "REGISTRATION_MODES",
    "Account",
    "AccountStore",
    "Accounts",
    "LoginGuard",
    "MemoryAccounts",
    "check_password",
    "hash_password",
    "verify_password",
]

REGISTRATION_MODES = ("open", "closed", "off")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
MAX_PASSWORD = 1024  # bytes of UTF-8
HASH_THREADS = 2
HASHES_QUEUED = 32  # checks waiting for the pool at most; more are refused
# Failed logins: a burst, then one more try per interval, per account and per address.
ACCOUNT_FAILURES, ACCOUNT_REFILL = 5, 10.0  # seconds per try
ADDRESS_FAILURES, ADDRESS_REFILL = 20, 3.0
GUARD_SIZE = 10_000  # buckets kept per kind before full ones are forgotten


@dataclass(frozen=True, slots=True)
class Account:
    """A stored account: its nick as registered, its password hash, when (ms)."""

    name: str
    hash: str
    created: int

    @property
    def key(self) -> str:
        return account_key(self.name)


def account_key(name: str) -> str:
    """The key accounts are stored under: the nick ASCII case folded."""
    return nick_key(name) or name


class AccountStore(Protocol):
    """Where accounts live: the history store, or the cluster's Redis."""

    def account(self, key: str) -> Account | None:
        """The account stored under `key` (account_key of its name), or None."""

    def create_account(self, account: Account) -> bool:
        """Store a new account; False if one has its key already."""

    def update_account(self, account: Account) -> bool:
        """Replace the hash of an existing account; False if there is none."""

    def delete_account(self, key: str) -> bool:
        """Delete an account; False if there was none."""

    def accounts(self) -> list[Account]:
        """Every account, sorted by key."""


class MemoryAccounts:
    """Accounts in a dict (--store memory: lost on exit)."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}

    def account(self, key: str) -> Account | None:
        return self._accounts.get(key)

    def create_account(self, account: Account) -> bool:
        if account.key in self._accounts:
            return False
        self._accounts[account.key] = account
        return True

    def update_account(self, account: Account) -> bool:
        if account.key not in self._accounts:
            return False
        self._accounts[account.key] = account
        return True

    def delete_account(self, key: str) -> bool:
        return self._accounts.pop(key, None) is not None

    def accounts(self) -> list[Account]:
        return [self._accounts[key] for key in sorted(self._accounts)]


# -- hashing (pure) ----------------------------------------------------------------------

def check_password(password: str, min_length: int = 1) -> None:
    """Raise `bad_password` unless `password` may be an account's password."""
    if len(password) < min_length:
        raise RequestError("weak_password",
                           f"a password needs at least {min_length} characters")
    if "\0" in password or len(password.encode()) > MAX_PASSWORD:
        raise RequestError("bad_args", f"a password is at most {MAX_PASSWORD} bytes of "
                           "UTF-8, with no NUL")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$SALT$HASH` (base64) of `password`: slow, salted, self-describing."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=SCRYPT_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` hashes to `stored`, compared in constant time; False for a
    hash this code cannot read."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True),
                                n=int(n), r=int(r), p=int(p), maxmem=SCRYPT_MAXMEM,
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# -- the guess limit (pure: time is passed in) ---------------------------------------------

class LoginGuard:
    """Failed logins per account and per address: each failure takes a token, and a
    login is refused while either bucket is empty."""

    def __init__(self, account_burst: int = ACCOUNT_FAILURES,
                 account_refill: float = ACCOUNT_REFILL,
                 address_burst: int = ADDRESS_FAILURES,
                 address_refill: float = ADDRESS_REFILL) -> None:
        self._accounts = _FailureBuckets(account_burst, account_refill)
        self._addresses = _FailureBuckets(address_burst, address_refill)

    def wait(self, key: str, address: str, now: float) -> float:
        """Seconds until `key` may be tried from `address` (0: now)."""
        return max(self._accounts.wait(key, now), self._addresses.wait(address, now))

    def failed(self, key: str, address: str, now: float) -> None:
        """Record a failed login of `key` from `address`."""
        self._accounts.failed(key, now)
        self._addresses.failed(address, now)


class _FailureBuckets:
    """A bucket of failures per name, at most GUARD_SIZE of them (full ones go first)."""

    def __init__(self, burst: int, refill: float) -> None:
        self.burst, self.refill = burst, refill
        self._buckets: dict[str, _Failures] = {}

    def wait(self, name: str, now: float) -> float:
        bucket = self._buckets.get(name)
        return bucket.wait(now) if bucket is not None else 0.0

    def failed(self, name: str, now: float) -> None:
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= GUARD_SIZE:
                for full in [key for key, old in self._buckets.items() if old.full(now)]:
                    del self._buckets[full]
                while len(self._buckets) >= GUARD_SIZE:  # none full: the oldest goes
                    del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[name] = _Failures(self.burst, self.refill, now)
        bucket.take(now)


class _Failures(TokenBucket):
    """A TokenBucket of failures that can say how long until the next token."""

    __slots__ = ()

    def __init__(self, burst: int, refill: float, now: float) -> None:
        super().__init__(1 / refill, burst, now)

    def _level(self, now: float) -> float:
        return min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)

    def wait(self, now: float) -> float:
        level = self._level(now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def full(self, now: float) -> bool:
        return self._level(now) >= self.burst


# -- the service ------------------------------------------------------------------------------

class Accounts:
    """Registration and login for every door, over an AccountStore."""

    def __init__(self, store: AccountStore, registration: str = "open",
                 min_password: int = 8) -> None:
        self.store = store
        self.registration = registration
        self.min_password = min_password
        self.guard = LoginGuard()
        self._pool: ThreadPool | None = None
        self._queued = 0

    @property
    def enabled(self) -> bool:
        """Whether accounts exist at all (--registration off: no, every nick is free)."""
        return self.registration != "off"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()
            self._pool = None

    def _hashing(self, func: object, *args: str) -> object:
        """Run a hash in the pool: this greenlet waits, the loop does not."""
        if self._queued >= HASHES_QUEUED:
            raise RequestError("too_many_attempts", "too many logins at once; try again shortly")
        if self._pool is None:
            self._pool = ThreadPool(HASH_THREADS)
        self._queued += 1
        try:
            return self._pool.apply(func, args)  # type: ignore[arg-type]
        finally:
            self._queued -= 1

    def registered(self, nick: str) -> Account | None:
        """The account of `nick`, or None (always None with --registration off)."""
        if not self.enabled:
            return None
        return self.store.account(account_key(nick))

    def login(self, name: str, password: str, address: str) -> Account:
        """Check `password` for account `name` tried from `address`; the account, or
        RequestError: `bad_password` (unknown account or wrong password: one answer,
        so a login reveals nothing a hello would not), `too_many_attempts`."""
        if not self.enabled:
            raise RequestError("bad_password", "this server has no accounts")
        key = account_key(name)
        wait = self.guard.wait(key, address, monotonic())
        if wait > 0:
            raise RequestError("too_many_attempts",
                               f"too many failed logins; try again in {max(1, round(wait))} s")
        account = self.store.account(key)
        good = account is not None and bool(self._hashing(verify_password, password,
                                                          account.hash))
        if not good or account is None:
            self.guard.failed(key, address, monotonic())
            raise RequestError("bad_password", "wrong account name or password")
        return account

    def register(self, name: str, password: str, by_operator: bool = False) -> Account:
        """Create account `name`; `registration_closed`, `account_exists`,
        `weak_password`, `bad_args`."""
        if not self.enabled or (self.registration == "closed" and not by_operator):
            raise RequestError("registration_closed",
                               "this server does not let users register accounts")
        check_password(password, self.min_password if not by_operator else 1)
        if self.store.account(account_key(name)) is not None:
            raise RequestError("account_exists", f"{name} is registered already")
        account = Account(name, str(self._hashing(hash_password, password)),
                          int(time.time() * 1000))
        if not self.store.create_account(account):
            raise RequestError("account_exists", f"{name} is registered already")
        return account

    def change_password(self, name: str, password: str, by_operator: bool = False) -> Account:
        """Give account `name` a new password; `no_such_account`, `weak_password`."""
        check_password(password, self.min_password if not by_operator else 1)
        account = self.store.account(account_key(name))
        if account is None:
            raise RequestError("no_such_account", f"there is no account {name}")
        updated = Account(account.name, str(self._hashing(hash_password, password)),
                          account.created)
        if not self.store.update_account(updated):
            raise RequestError("no_such_account", f"there is no account {name}")
        return updated

    def drop(self, name: str) -> None:
        """Delete account `name`; `no_such_account`."""
        if not self.store.delete_account(account_key(name)):
            raise RequestError("no_such_account", f"there is no account {name}")
