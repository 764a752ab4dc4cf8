"""Admin actions over HTTP: train now, promote, roll back. Each needs the admin token
(`auth.admin_token`) as `Authorization: Bearer T`; with no admin token configured,
admin is off and every action is refused."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from app.api import _json_body
from app.chat import InputError
from app.swap import VersionSync
from storage import NotFound, Store
from trainer.schedule import TrainingScheduler

PROMOTABLE = ("candidate", "retired", "rolled_back")


def check_admin(request: Request, admin_token: str) -> None:
    if not admin_token:
        raise InputError(
            403, "admin actions are off: set auth.admin_token (RLHF_CHAT_AUTH_ADMIN_TOKEN)"
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise InputError(401, "admin actions need 'Authorization: Bearer <admin token>'")
    if not secrets.compare_digest(token.strip().encode(), admin_token.encode()):
        raise InputError(403, "that is not the admin token")


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
    app: FastAPI, store: Store, sync: VersionSync, scheduler: TrainingScheduler, admin_token: str
) -> None:
    @app.post("/api/admin/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token)
        body = await _json_body(request)
        if not scheduler.trigger_now(force=bool(body.get("force", True))):
            raise InputError(409, "a training cycle is already running")
        return {"started": True}

    @app.post("/api/admin/promote")
    async def promote(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token)
        body = await _json_body(request)
        # loading an adapter blocks: keep it off the event loop
        return {"live": await run_in_threadpool(promote_version, store, sync, body.get("version"))}

    @app.post("/api/admin/rollback")
    async def rollback(request: Request) -> dict[str, Any]:
        check_admin(request, admin_token)
        return {"live": await run_in_threadpool(rollback_version, store, sync)}
