"""Admin actions over HTTP: train now, promote, roll back, and user moderation (list,
flag, unflag, revoke; the leaderboard with flagged users' votes). Each needs, as
`Authorization: Bearer T`, the admin token (`auth.admin_token`) or the user token of a
signed-in user named in `auth.admin_users`; with neither configured, admin is off and
every action is refused."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from app.api import _json_body
from app.chat import InputError
from app.leaderboard import store_leaderboard
from app.moderation import revoke, set_flagged, users_report
from app.swap import VersionSync
from storage import NotFound, Store
from trainer.schedule import TrainingScheduler

PROMOTABLE = ("candidate", "retired", "rolled_back")


def check_admin(
    request: Request, admin_token: str, admin_user: Callable[[str], bool] | None = None
) -> None:
    """Refuse unless the bearer token is the admin token, or `admin_user(token)` says it
    is the user token of an admin."""
    if not admin_token and admin_user is None:
        raise InputError(
            403, "admin actions are off: set auth.admin_token (RLHF_CHAT_AUTH_ADMIN_TOKEN)"
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
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


def install_admin_api(
    app: FastAPI,
    store: Store,
    sync: VersionSync,
    scheduler: TrainingScheduler,
    admin_token: str,
    admin_user: Callable[[str], bool] | None = None,
) -> None:
    @app.post("/api/admin/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token, admin_user)
        body = await _json_body(request)
        force = body.get("force", True)
        if not isinstance(force, bool):  # bool("no") is True: a wrong type must not choose
            raise InputError(400, "force must be true or false")
        if not scheduler.trigger_now(force=force):
            raise InputError(409, "a training cycle is already running")
        return {"started": True}

    @app.post("/api/admin/promote")
    async def promote(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token, admin_user)
        body = await _json_body(request)
        # loading an adapter blocks: keep it off the event loop
        return {"live": await run_in_threadpool(promote_version, store, sync, body.get("version"))}

    @app.post("/api/admin/rollback")
    async def rollback(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token, admin_user)
        return {"live": await run_in_threadpool(rollback_version, store, sync)}

    @app.get("/api/admin/users")
    async def users(request: Request, flagged: bool = False) -> dict[str, Any]:
        check_admin(request, admin_token, admin_user)
        return {"users": await run_in_threadpool(users_report, store, flagged_only=flagged)}

    @app.post("/api/admin/users/{user_id}/{action}")
    async def moderate(request: Request, user_id: str, action: str) -> dict[str, Any]:
        check_admin(request, admin_token, admin_user)
        actions = {
            "flag": lambda: set_flagged(store, user_id, True),
            "unflag": lambda: set_flagged(store, user_id, False),
            "revoke": lambda: revoke(store, user_id),
        }
        if action not in actions:
            raise InputError(404, f"no user action {action!r}: flag, unflag or revoke")
        return await run_in_threadpool(actions[action])

    @app.get("/api/admin/leaderboard")
    async def leaderboard_with_flagged(request: Request) -> list[dict[str, Any]]:
        """The leaderboard with the votes of flagged users counted again."""
        check_admin(request, admin_token, admin_user)
        board = await run_in_threadpool(store_leaderboard, store, include_flagged=True)
        return [r.as_json() for r in board.ratings]
