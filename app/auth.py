"""Who is signed in, and who may use the admin actions.

    anonymous      every browser (and `POST /api/session`) gets a user of kind `anon`,
                   unless password users are configured
    password       `auth.password_users`: the page asks for a name and password
                   (Gradio's login form); `POST /api/login` gives the API a token;
                   both limited per address and per name
    Hugging Face   on a Space (`auth.space_id`, from `SPACE_ID`): "Sign in with Hugging
                   Face" on the page; the user is named after the Hub username
    sign-in only   `auth.require_sign_in` (or password users): anonymous users may
                   neither chat nor vote, on the page or over the API
    admin          the admin token (`auth.admin_token`), or the token of a signed-in
                   user named in `auth.admin_users`

A signed-in person is one `users` row per (kind, name), created on the first sign-in,
so their votes stay theirs across browsers. Identities are the same signed user
tokens as anonymous ones (`app.identity`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.config import AuthConfig
from app.identity import Identity, InvalidToken
from app.limits import client_address
from storage import Store, StoreError, User

SCRYPT_PREFIX = "scrypt$"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A `scrypt$<salt>$<key>` string for `auth.password_users` (`name:scrypt$...`)."""
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"{SCRYPT_PREFIX}{salt.hex()}${key.hex()}"


def password_matches(password: str, stored: str) -> bool:
    """Compare in constant time against a `scrypt$...` hash or a plain configured secret."""
    if stored.startswith(SCRYPT_PREFIX):
        try:
            salt_hex, key_hex = stored[len(SCRYPT_PREFIX) :].split("$")
            salt, key = bytes.fromhex(salt_hex), bytes.fromhex(key_hex)
        except ValueError:
            return False
        candidate = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
        return hmac.compare_digest(candidate, key)
    return hmac.compare_digest(password.encode(), stored.encode())


class TooManyAttempts(Exception):
    """A sign-in refused before checking the password: too many attempts."""


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds, in memory. Keys whose
    events have all left the window are dropped, so many names tried once cost little."""

    SWEEP_AT = 10_000  # keys held before a sweep drops the stale ones

    def __init__(
        self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        cutoff = self._clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def full(self, key: str) -> bool:
        with self._lock:
            times = self._recent(key)
            return times is not None and len(times) >= self.limit

    def hit(self, key: str) -> bool:
        """Count one event for `key` now, unless it is over the limit (then False)."""
        with self._lock:
            times = self._recent(key)
            if times is not None and len(times) >= self.limit:
                return False
            if len(self._times) >= self.SWEEP_AT:
                for stale in list(self._times):
                    self._recent(stale)
            self._times.setdefault(key, deque()).append(self._clock())
            return True


class Accounts:
    """Password checks, named users, the admin role and sign-in limits, from `AuthConfig`.

    Every password check costs one scrypt, whether the name is known, unknown or
    configured with a plain secret (those are hashed once at start), so timing does not
    tell which names exist."""

    def __init__(
        self, config: AuthConfig, store: Store, *, fingerprint_key: str | None = None
    ) -> None:
        self.store = store
        self._passwords = {
            name: stored if stored.startswith(SCRYPT_PREFIX) else hash_password(stored)
            for name, stored in _parse(config.password_users)
        }
        self._entries = dict(_parse(config.password_users))
        self._unknown = hash_password(secrets.token_urlsafe(16)) if self._passwords else ""
        self._admins = {name.strip() for name in config.admin_users if name.strip()}
        self.hugging_face = bool(config.space_id)
        self._require_sign_in = config.require_sign_in
        self._user_max_age_s = config.user_token_days * 86400
        self._admin_max_age_s = config.admin_user_token_days * 86400
        self.addresses = SlidingWindow(config.login_attempts_per_window, config.login_window_s)
        self._failures = SlidingWindow(config.login_failures_per_name, config.login_window_s)
        self._fingerprint_key = (
            hmac.new(fingerprint_key.encode(), b"password-entry-fingerprint", "sha256").digest()
            if fingerprint_key
            else None
        )

    @property
    def anonymous_allowed(self) -> bool:
        """Whether people who have not signed in may chat and vote."""
        return not (self._require_sign_in or self.passwords_required)

    def may_use(self, user: User) -> bool:
        """Whether this user may chat and vote: anyone, unless sign-in is required."""
        return self.anonymous_allowed or user.kind != "anon"

    @property
    def passwords_required(self) -> bool:
        """Password users are configured: nobody is anonymous any more."""
        return bool(self._passwords)

    def check_password(self, name: str, password: str) -> bool:
        """One scrypt for every name, known or not."""
        stored = self._passwords.get(name)
        matches = password_matches(password, stored or self._unknown)
        return stored is not None and matches

    def login(self, name: str, password: str, address: str | None = None) -> User | None:
        """The user behind a correct name and password, else None; `TooManyAttempts` past
        the per-address or per-name limit (then the password is not checked at all).
        Blocks for one scrypt: call it off the event loop."""
        if address is not None and not self.addresses.hit(address):
            raise TooManyAttempts("too many sign-in attempts from this address: wait a while")
        if self._failures.full(name):
            raise TooManyAttempts("too many failed sign-ins for this name: wait a while")
        if not self.check_password(name, password):
            self._failures.hit(name)
            return None
        user = self.store.named_user("password", name)
        if user.credential_fingerprint is None and self._fingerprint_key is not None:
            self.store.set_credential_fingerprint(user.id, self._fingerprint(name))
        return user

    def password_user(self, name: str, password: str) -> User | None:
        """The user behind a correct name and password, else None (no limits)."""
        if not self.check_password(name, password):
            return None
        return self.store.named_user("password", name)

    def page_login(self) -> Callable[[str, str], object]:
        """For Gradio's login form: an async check that keeps scrypt off the event loop
        and counts failures per name (the address limit is a middleware: `app.login`)."""
        from starlette.concurrency import run_in_threadpool

        async def check(name: str, password: str) -> bool:
            try:
                return await run_in_threadpool(self.login, name, password) is not None
            except TooManyAttempts:
                return False

        return check

    def _fingerprint(self, name: str) -> str | None:
        entry = self._entries.get(name)
        if entry is None or self._fingerprint_key is None:
            return None
        return hmac.new(self._fingerprint_key, entry.encode(), "sha256").hexdigest()

    def sync_password_users(self) -> list[int]:
        """At start: revoke the tokens of password users whose configured entry changed or
        was removed since the last start. Returns their ids."""
        if self._fingerprint_key is None:
            return []
        return [
            user.id
            for user in self.store.users(kind="password")
            if (user.credential_fingerprint is not None or user.name in self._entries)
            and self.store.set_credential_fingerprint(user.id, self._fingerprint(user.name or ""))
        ]

    def signed_in_user(self, kind: str, name: str) -> User:
        return self.store.named_user(kind, name)

    def is_admin(self, user: User) -> bool:
        """A signed-in (never anonymous) user named in `auth.admin_users`."""
        return user.kind in ("password", "oauth") and bool(user.name) and user.name in self._admins

    def token_max_age_s(self, user: User | None) -> float:
        """How long this user's tokens live: shorter for admins."""
        if user is not None and self.is_admin(user):
            return self._admin_max_age_s
        return self._user_max_age_s

    def admin_check(self, identity: Identity) -> Callable[[str], bool] | None:
        """For `check_admin`: whether a user token is an admin's (None: no admin users)."""
        if not self._admins:
            return None

        def is_admin_token(token: str) -> bool:
            try:
                return self.is_admin(self.store.get_user(identity.verify(token)))
            except (InvalidToken, StoreError):
                return False

        return is_admin_token


def install_login_limit(app: FastAPI, accounts: Accounts, *, forwarded_header: str = "") -> None:
    """Count the page's sign-in form (Gradio's `POST /login`) against the per-address
    limit before Gradio checks the password; `POST /api/login` counts in `login`. The
    address is the connection's, or `serving.forwarded_header`'s (`app.limits`)."""

    @app.middleware("http")
    async def _limit_page_login(request: Request, call_next: Any) -> Any:
        if request.method == "POST" and request.url.path.rstrip("/") == "/login":
            peer = request.client.host if request.client else None
            address = client_address(request.headers, peer, forwarded_header)
            if accounts.passwords_required and not accounts.addresses.hit(address):
                return JSONResponse(
                    {"detail": "too many sign-in attempts from this address: wait a while"},
                    status_code=429,
                )
        return await call_next(request)


def _parse(entries: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        name, _, secret = entry.partition(":")
        pairs.append((name.strip(), secret))
    return pairs
