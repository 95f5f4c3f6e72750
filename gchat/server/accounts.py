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
import itertools
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
HASHES_PER_ADDRESS = 2  # in flight at once from one address
HASH_BURST, HASH_REFILL = 20, 1.0  # hashes per address: a burst, then one a second
REGISTER_BURST, REGISTER_REFILL = 5, 60.0  # accounts registered per address
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

    @property
    def id(self) -> str:
        """What names this account and no later one of the same nick (a dropped nick
        registered again is another account): its key and creation time."""
        return f"{self.key}~{self.created}"


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
    """Raise `bad_args` or `weak_password` unless `password` may be an account's."""
    if "\0" in password or len(password.encode()) > MAX_PASSWORD:
        raise RequestError("bad_args", f"a password is at most {MAX_PASSWORD} bytes of "
                           "UTF-8, with no NUL")
    if len(password) < min_length:
        raise RequestError("weak_password",
                           f"a password needs at least {min_length} characters")


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
        """Record a failed login of `key` ("": of no account) from `address`."""
        if key:
            self._accounts.failed(key, now)
        self._addresses.failed(address, now)

    def refund(self, key: str, address: str, now: float) -> None:
        """The login recorded as failed (before its check) succeeded: give it back."""
        if key:
            self._accounts.refund(key, now)
        self._addresses.refund(address, now)


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
                if len(self._buckets) >= GUARD_SIZE:  # none full: the oldest tenth goes
                    for oldest in list(itertools.islice(self._buckets, GUARD_SIZE // 10)):
                        del self._buckets[oldest]
            bucket = self._buckets[name] = _Failures(self.burst, self.refill, now)
        bucket.take(now)

    def refund(self, name: str, now: float) -> None:
        bucket = self._buckets.get(name)
        if bucket is not None:
            bucket.give(now)


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

    def give(self, now: float) -> None:
        """Put a token back (a try that took one turned out fine)."""
        self._tokens = min(float(self.burst), self._level(now) + 1.0)
        self._stamp = now


# -- the service ------------------------------------------------------------------------------

class Accounts:
    """Registration and login for every door, over an AccountStore.

    Besides the failed-login guard, each address may have at most HASHES_PER_ADDRESS
    hashes in flight and spends a token of its hash bucket on each (logins that
    succeed included), so one client cannot keep the pool busy for everyone; and it
    may register REGISTER_BURST accounts, then one every REGISTER_REFILL seconds."""

    def __init__(self, store: AccountStore, registration: str = "open",
                 min_password: int = 8) -> None:
        self.store = store
        self.registration = registration
        self.min_password = min_password
        self.guard = LoginGuard()
        self._hashes = _FailureBuckets(HASH_BURST, HASH_REFILL)
        self._registrations = _FailureBuckets(REGISTER_BURST, REGISTER_REFILL)
        self._pool: ThreadPool | None = None
        self._queued = 0
        self._in_flight: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """Whether accounts exist at all (--registration off: no, every nick is free)."""
        return self.registration != "off"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()
            self._pool = None

    def _hashing(self, address: str | None, func: object, *args: str) -> object:
        """Run a hash in the pool for a client at `address` (None: an operator): this
        greenlet waits, the loop does not."""
        if address is not None:
            wait = self._hashes.wait(address, monotonic())
            if self._in_flight.get(address, 0) >= HASHES_PER_ADDRESS or wait > 0:
                raise RequestError("too_many_attempts", "too many password checks from your "
                                   f"address; try again in {max(1, round(wait))} s")
            self._hashes.failed(address, monotonic())
        if self._queued >= HASHES_QUEUED:
            raise RequestError("too_many_attempts", "too many logins at once; try again shortly")
        if self._pool is None:
            self._pool = ThreadPool(HASH_THREADS)
        self._queued += 1
        if address is not None:
            self._in_flight[address] = self._in_flight.get(address, 0) + 1
        try:
            return self._pool.apply(func, args)  # type: ignore[arg-type]
        finally:
            self._queued -= 1
            if address is not None:
                left = self._in_flight.pop(address) - 1
                if left:
                    self._in_flight[address] = left

    def registered(self, nick: str) -> Account | None:
        """The account of `nick`, or None (always None with --registration off)."""
        if not self.enabled:
            return None
        return self.store.account(account_key(nick))

    def login(self, name: str, password: str, address: str) -> Account:
        """Check `password` for account `name` tried from `address`; the account, or
        RequestError: `bad_password` (unknown account or wrong password: one answer,
        so a login reveals nothing a hello would not), `too_many_attempts`. A try
        takes its failure token before the password is checked and gets it back if
        the password was right, so tries at once count as much as tries in a row."""
        if not self.enabled:
            raise RequestError("bad_password", "this server has no accounts")
        key = account_key(name)
        wait = self.guard.wait(key, address, monotonic())
        if wait > 0:
            raise RequestError("too_many_attempts",
                               f"too many failed logins; try again in {max(1, round(wait))} s")
        account = self.store.account(key)
        # A name with no account costs the address a try, not a bucket of its own: a
        # flood of made-up names cannot push a real account's bucket out.
        guarded = key if account is not None else ""
        self.guard.failed(guarded, address, monotonic())
        try:
            good = account is not None and bool(self._hashing(address, verify_password,
                                                              password, account.hash))
        except BaseException:  # not checked at all (busy, the store failed): no try
            self.guard.refund(guarded, address, monotonic())
            raise
        if not good or account is None:
            raise RequestError("bad_password", "wrong account name or password")
        self.guard.refund(guarded, address, monotonic())
        return account

    def register(self, name: str, password: str, address: str | None = None) -> Account:
        """Create account `name` for a client at `address` (None: an operator, who may
        register whatever the mode, any length of password); `bad_args`,
        `weak_password`, `registration_closed`, `account_exists`, `too_many_attempts`."""
        check_password(password, self.min_password if address is not None else 1)
        if not self.enabled or (self.registration == "closed" and address is not None):
            raise RequestError("registration_closed",
                               "this server does not let users register accounts")
        if self.store.account(account_key(name)) is not None:
            raise RequestError("account_exists", f"{name} is registered already")
        if address is not None:
            wait = self._registrations.wait(address, monotonic())
            if wait > 0:
                raise RequestError("too_many_attempts", "too many accounts registered from "
                                   f"your address; try again in {max(1, round(wait))} s")
            self._registrations.failed(address, monotonic())
        account = Account(name, str(self._hashing(address, hash_password, password)),
                          int(time.time() * 1000))
        if not self.store.create_account(account):
            raise RequestError("account_exists", f"{name} is registered already")
        return account

    def change_password(self, name: str, password: str, address: str | None = None) -> Account:
        """Give account `name` a new password (for a client at `address`, None: an
        operator); `no_such_account`, `weak_password`."""
        check_password(password, self.min_password if address is not None else 1)
        account = self.store.account(account_key(name))
        if account is None:
            raise RequestError("no_such_account", f"there is no account {name}")
        updated = Account(account.name, str(self._hashing(address, hash_password, password)),
                          account.created)
        if not self.store.update_account(updated):
            raise RequestError("no_such_account", f"there is no account {name}")
        return updated

    def drop(self, name: str) -> Account:
        """Delete account `name` and its private logs; `no_such_account`."""
        account = self.store.account(account_key(name))
        if account is None or not self.store.delete_account(account.key):
            raise RequestError("no_such_account", f"there is no account {name}")
        return account
