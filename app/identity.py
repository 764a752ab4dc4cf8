"""User tokens: a signed (user id, token version, issue time) that a browser or script keeps.

A token is signed with the token key (`auth.session_secret`, or one generated once into
the data directory as `user_token_key`). It expires (`auth.user_token_days`, shorter for
admins: `auth.admin_user_token_days`), and raising the user's token version in the store
(`rlhf-chat users revoke ID`, a changed or removed password) voids every token issued
before. Tokens without an issue time or a version (from earlier releases) are refused.

Keys have one job each. The token key never leaves the server: nothing a Gradio component
is given may hold it, because every component prop is served to any visitor in `/config`.
The page's local storage has its own key (`browser_state_key`), which is public by
nature (the page needs it) and protects nothing: the token inside is what is signed.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeSerializer

if TYPE_CHECKING:
    from storage import Store, User

TOKEN_KEY_FILE = "user_token_key"
BROWSER_STATE_KEY_FILE = "browser_state_key"
# the key file of earlier releases; its content was served on the page, so it is retired
LEAKED_KEY_FILE = "session_secret"
TOKEN_SALT = "rlhf-chat-user-token"
DEFAULT_MAX_AGE_S = 30 * 86400.0
CLOCK_SKEW_S = 300.0  # a token issued this far "in the future" is still accepted


class InvalidToken(Exception):
    """A user token that is missing, malformed, expired, revoked or not signed here."""


def ensure_key(configured: str, data_dir: Path, filename: str) -> str:
    """The configured key, or the one kept in `data_dir/filename` (created on first use,
    readable by this user only)."""
    if configured:
        return configured
    path = Path(data_dir) / filename
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def ensure_session_secret(configured: str, data_dir: Path) -> str:
    """The token-signing key: `auth.session_secret`, or the generated one. A key file left
    by an earlier release is deleted: the page used to serve it."""
    leaked = Path(data_dir) / LEAKED_KEY_FILE
    if leaked.exists():
        leaked.unlink()
    return ensure_key(configured, data_dir, TOKEN_KEY_FILE)


def ensure_browser_state_key(data_dir: Path) -> str:
    """The key the page encrypts its local storage with. Public: never a server secret."""
    return ensure_key("", data_dir, BROWSER_STATE_KEY_FILE)


class Identity:
    """Issues and checks user tokens. With `store`, a token must name a user the store
    has, with that user's current token version; `max_age_s` (seconds, or a function of
    the user, who is None without a store) bounds a token's age."""

    def __init__(
        self,
        secret: str,
        *,
        store: Store | None = None,
        max_age_s: float | Callable[[User | None], float] = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._serializer = URLSafeSerializer(secret, salt=TOKEN_SALT)
        self._store = store
        self._max_age_s = max_age_s
        self._clock = clock

    def issue(self, user_id: int) -> str:
        version = 0
        if self._store is not None:
            from storage import NotFound

            try:
                version = self._store.get_user(int(user_id)).token_version
            except NotFound:
                pass  # verify refuses it anyway
        payload = {"user_id": int(user_id), "version": version, "issued_at": int(self._clock())}
        return self._serializer.dumps(payload)

    def verify(self, token: str | None) -> int:
        """The user id of a valid token; `InvalidToken` says why not."""
        if not token or not isinstance(token, str):
            raise InvalidToken("no user token was sent")
        try:
            payload = self._serializer.loads(token)
        except BadSignature as exc:
            raise InvalidToken("the user token is not valid") from exc
        if not isinstance(payload, dict) or set(payload) != {"user_id", "version", "issued_at"}:
            raise InvalidToken(
                "the user token is not valid (from an earlier release?): sign in again"
            )
        user_id, version, issued_at = payload["user_id"], payload["version"], payload["issued_at"]
        if not all(type(v) is int for v in (user_id, version, issued_at)):
            raise InvalidToken("the user token is not valid")
        user = None
        if self._store is not None:
            from storage import NotFound

            try:
                user = self._store.get_user(user_id)
            except NotFound as exc:
                raise InvalidToken("the user token is not valid: no such user") from exc
            if version != user.token_version:
                raise InvalidToken("the user token was revoked: sign in again")
        age = self._clock() - issued_at
        max_age = self._max_age_s(user) if callable(self._max_age_s) else self._max_age_s
        if age > max_age or age < -CLOCK_SKEW_S:
            raise InvalidToken("the user token has expired: sign in again")
        return user_id
