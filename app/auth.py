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
from collections.abc import Callable, Sequence

from app.config import AuthConfig
from app.identity import Identity, InvalidToken
from app.limits import SlidingWindow
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


def _parse(entries: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        name, _, secret = entry.partition(":")
        pairs.append((name.strip(), secret))
    return pairs
