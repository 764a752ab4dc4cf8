"""Admin actions over HTTP: train now, promote, roll back, and user moderation (list,
flag, unflag, revoke; the leaderboard with flagged users' votes). Each needs, as
`Authorization: Bearer T`, the admin token (`auth.admin_token`) or the user token of a
signed-in user named in `auth.admin_users` (`app.admin.check_admin`); with neither
configured, admin is off and every action is refused.

    POST /api/admin/train {"force"?} | /api/admin/promote {"version"} | /api/admin/rollback
    GET  /api/admin/users[?flagged=true]     POST /api/admin/users/{id}/flag|unflag|revoke
    GET  /api/admin/leaderboard
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from app.admin import (
    check_admin,
    promote_version,
    revoke,
    rollback_version,
    set_flagged,
    train_now,
    users_report,
)
from app.errors import InputError
from app.http.common import bearer_token, json_body
from app.leaderboard import store_leaderboard
from app.serving.swap import VersionSync
from storage import Store
from trainer.schedule import TrainingScheduler


def install_admin_api(
    app: FastAPI,
    store: Store,
    sync: VersionSync,
    scheduler: TrainingScheduler,
    admin_token: str,
    admin_user: Callable[[str], bool] | None = None,
) -> None:
    def admin(request: Request) -> None:
        check_admin(bearer_token(request), admin_token, admin_user)

    @app.post("/api/admin/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        admin(request)
        body = await json_body(request)
        train_now(scheduler, force=body.get("force", True))
        return {"started": True}

    @app.post("/api/admin/promote")
    async def promote(request: Request) -> dict[str, Any]:
        admin(request)
        body = await json_body(request)
        # loading an adapter blocks: keep it off the event loop
        return {"live": await run_in_threadpool(promote_version, store, sync, body.get("version"))}

    @app.post("/api/admin/rollback")
    async def rollback(request: Request) -> dict[str, Any]:
        admin(request)
        return {"live": await run_in_threadpool(rollback_version, store, sync)}

    @app.get("/api/admin/users")
    async def users(request: Request, flagged: bool = False) -> dict[str, Any]:
        admin(request)
        return {"users": await run_in_threadpool(users_report, store, flagged_only=flagged)}

    @app.post("/api/admin/users/{user_id}/{action}")
    async def moderate(request: Request, user_id: str, action: str) -> dict[str, Any]:
        admin(request)
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
        admin(request)
        board = await run_in_threadpool(store_leaderboard, store, include_flagged=True)
        return [r.as_json() for r in board.ratings]
