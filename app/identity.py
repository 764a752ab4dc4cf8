"""Anonymous identities: a signed user id that a browser or script keeps.

A token is the user's id signed with the configured session secret, so it survives
restarts and cannot be forged or pointed at another user. When no secret is
configured, one is generated once and kept in the data directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

SECRET_FILE = "session_secret"


class InvalidToken(Exception):
    """A user token that is missing, malformed or not signed by this server."""


def ensure_session_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, or the one kept in `data_dir` (created on first use)."""
    if configured:
        return configured
    path = Path(data_dir) / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


class Identity:
    """Issues and checks user tokens."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="rlhf-chat-user")

    def issue(self, user_id: int) -> str:
        return self._serializer.dumps({"user_id": int(user_id)})

    def verify(self, token: str | None) -> int:
        if not token:
            raise InvalidToken("no user token")
        try:
            payload = self._serializer.loads(token)
        except BadSignature as exc:
            raise InvalidToken("user token is not valid") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("user_id"), int):
            raise InvalidToken("user token is not valid")
        return payload["user_id"]
