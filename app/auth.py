"""Who is signed in, and who may use the admin actions.

    anonymous      every browser (and `POST /api/session`) gets a user of kind `anon`,
                   unless password users are configured
    password       `auth.password_users`: the page asks for a name and password
                   (Gradio's login form); `POST /api/login` gives the API a token
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


class Accounts:
    """Password checks, named users and the admin role, from `AuthConfig`."""

    def __init__(self, config: AuthConfig, store: Store) -> None:
        self.store = store
        self._passwords = dict(_parse(config.password_users))
        self._admins = {name.strip() for name in config.admin_users if name.strip()}
        self.hugging_face = bool(config.space_id)
        self._require_sign_in = config.require_sign_in

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
        stored = self._passwords.get(name)
        if stored is None:
            password_matches(password, hash_password("x"))  # same time for unknown names
            return False
        return password_matches(password, stored)

    def password_user(self, name: str, password: str) -> User | None:
        """The user behind a correct name and password, else None."""
        if not self.check_password(name, password):
            return None
        return self.store.named_user("password", name)

    def signed_in_user(self, kind: str, name: str) -> User:
        return self.store.named_user(kind, name)

    def is_admin(self, user: User) -> bool:
        """A signed-in (never anonymous) user named in `auth.admin_users`."""
        return user.kind in ("password", "oauth") and bool(user.name) and user.name in self._admins

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
