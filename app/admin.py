"""Admin actions, one service for the command line (`rlhf-chat versions`, `rlhf-chat
users`), the admin API (`/api/admin/...`) and the Dashboard: who is an admin, train now,
promote, roll back, and moderation (list users, flag and unflag them, revoke their tokens).

Admin is the admin token (`auth.admin_token`) or the user token of a signed-in user named
in `auth.admin_users`; with neither configured, admin is off and every action is refused.

A flagged user's judgments leave the training sets, canary judging and the leaderboard
(the admin can still see the leaderboard with them); their reports stay stored. Revoking
raises the user's token version, so every token issued to them before is refused (401).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from app.errors import InputError, check_id
from app.serving.swap import VersionSync
from storage import NotFound, Store
from trainer.schedule import TrainingScheduler

PROMOTABLE = ("candidate", "retired", "rolled_back")


def check_admin(
    token: str | None, admin_token: str, admin_user: Callable[[str], bool] | None = None
) -> None:
    """Refuse unless `token` (sent as `Authorization: Bearer T`, or typed on the page) is
    the admin token, or `admin_user(token)` says it is the user token of an admin."""
    if not admin_token and admin_user is None:
        raise InputError(
            403, "admin actions are off: set auth.admin_token (RLHF_CHAT_AUTH_ADMIN_TOKEN)"
        )
    if not token:
        raise InputError(401, "admin actions need 'Authorization: Bearer <admin token>'")
    token = token.strip()
    if admin_token and secrets.compare_digest(token.encode(), admin_token.encode()):
        return
    if admin_user is not None and admin_user(token):
        return
    if admin_user is None:
        raise InputError(403, "that is not the admin token")
    raise InputError(403, "that is neither the admin token nor the token of an admin user")


def promote_version(store: Store, sync: VersionSync | None, name: Any) -> str:
    """Make a stored policy version live and swap it in; refuses what cannot serve."""
    if not isinstance(name, str) or not name:
        raise InputError(400, "version must be a version name")
    try:
        version = store.get_version(name)
    except NotFound as exc:
        raise InputError(404, str(exc)) from exc
    if version.kind != "policy":
        raise InputError(400, f"{name} is a {version.kind} version, not a policy")
    if version.status == "live":
        return name
    if version.status not in PROMOTABLE:
        raise InputError(
            409, f"{name} is {version.status}; only {', '.join(PROMOTABLE)} can go live"
        )
    store.promote(name)
    if sync is not None:  # the web process swaps at once; others notice by polling
        sync.sync()
    return store.live_version("policy").name


def rollback_version(store: Store, sync: VersionSync | None) -> str:
    try:
        store.rollback("policy")
    except NotFound as exc:
        raise InputError(409, str(exc)) from exc
    if sync is not None:
        sync.sync()
    return store.live_version("policy").name


def train_now(scheduler: TrainingScheduler, *, force: bool = True) -> None:
    """Start a training cycle in the background; HTTP 409 while one runs."""
    if not isinstance(force, bool):  # bool("no") is True: a wrong type must not choose
        raise InputError(400, "force must be true or false")
    if not scheduler.trigger_now(force=force):
        raise InputError(409, "a training cycle is already running")


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
