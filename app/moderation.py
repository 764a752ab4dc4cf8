"""Moderation: list users, flag and unflag them, revoke their tokens. One service for the
command line (`rlhf-chat users`), the admin API (`/api/admin/users`) and the Dashboard.

A flagged user's judgments leave the training sets, canary judging and the leaderboard
(the admin can still see the leaderboard with them); their reports stay stored. Revoking
raises the user's token version, so every token issued to them before is refused (401).
"""

from __future__ import annotations

from typing import Any

from app.chat import InputError, check_id
from storage import NotFound, Store

USER_COLUMNS = ["id", "kind", "name", "flagged", "judgments", "reports", "token version", "created"]


def users_report(store: Store, *, flagged_only: bool = False) -> list[dict[str, Any]]:
    """Every user (or only flagged ones), with their judgment and report counts, the
    users with the most judgments first."""
    judgments = {u.user_id: u.total for u in store.judgments_per_user()}
    reports = {u.user_id: u.total for u in store.judgments_per_user(("flag",))}
    users = store.users(flagged=True if flagged_only else None)
    rows = [
        {
            "id": u.id,
            "kind": u.kind,
            "name": u.name or "",
            "flagged": bool(u.is_flagged),
            "judgments": judgments.get(u.id, 0),
            "reports": reports.get(u.id, 0),
            "token version": u.token_version,
            "created": u.created_at[:19],
        }
        for u in users
    ]
    return sorted(rows, key=lambda r: (-r["judgments"], r["id"]))


def set_flagged(store: Store, user_id: Any, flagged: bool) -> dict[str, Any]:
    uid = _known_user(store, user_id)
    store.set_user_flagged(uid, flagged)
    return {"user_id": uid, "flagged": flagged}


def revoke(store: Store, user_id: Any) -> dict[str, Any]:
    uid = _known_user(store, user_id)
    return {"user_id": uid, "token_version": store.revoke_tokens(uid)}


def _known_user(store: Store, user_id: Any) -> int:
    if isinstance(user_id, str) and user_id.strip().lstrip("#").isdigit():
        user_id = int(user_id.strip().lstrip("#"))
    uid = check_id(user_id, "user id")
    try:
        store.get_user(uid)
    except NotFound as exc:
        raise InputError(404, f"no user {uid}") from exc
    return uid
