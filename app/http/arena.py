"""The arena over HTTP: start a blind battle, vote on it, read the leaderboard.

    POST /api/battles             {"messages": [...], "max_new_tokens"?: N}
                                  -> {"battle_id", "a": {"message_id", "content"}, "b": {...}}
    POST /api/battles/{id}/vote   {"outcome": "a"|"b"|"tie"|"both_bad"}
                                  -> {"battle_id", "outcome", "version_a", "version_b", "pairing"}
    GET  /api/leaderboard         [{"version", "rating", "ci95", "battles", "win_rate"}...]

The versions stay hidden until the vote; the vote is answered only after it has
committed. Errors are the API's JSON errors (see common.py): 400 bad outcome, 403 not
your battle, 404 unknown battle, 409 already voted, 429 voting too fast.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.arena import ArenaService
from app.auth import Accounts
from app.http.common import bearer_user, error, json_body
from app.identity import Identity
from app.leaderboard import store_leaderboard
from app.serving.backend import BackendError


def install_arena_api(
    app: FastAPI, arena: ArenaService, identity: Identity, accounts: Accounts | None = None
) -> None:
    """Register the arena routes on `app` (after `install_api`, before Gradio is mounted)."""
    store = arena.store

    @app.post("/api/battles", response_model=None)
    async def create_battle(request: Request) -> dict[str, Any] | JSONResponse:
        uid = bearer_user(request, identity, store, accounts)
        body = await json_body(request)
        try:  # generation blocks: keep it off the event loop
            turn, battle = await run_in_threadpool(
                arena.battle, uid, body.get("messages"), max_new_tokens=body.get("max_new_tokens")
            )
        except BackendError as exc:
            return error(503, str(exc))
        a, b = turn.sides
        return {
            "battle_id": battle.id,
            "a": {"message_id": battle.message_a_id, "content": a.text},
            "b": {"message_id": battle.message_b_id, "content": b.text},
        }

    @app.post("/api/battles/{battle_id}/vote")
    async def vote(battle_id: int, request: Request) -> dict[str, Any]:
        uid = bearer_user(request, identity, store, accounts)
        body = await json_body(request)
        reveal = await run_in_threadpool(arena.vote, uid, battle_id, body.get("outcome"))
        return {
            "battle_id": reveal.battle_id,
            "outcome": reveal.outcome,
            "version_a": reveal.version_a,
            "version_b": reveal.version_b,
            "pairing": reveal.pairing,
        }

    @app.get("/api/leaderboard")
    def leaderboard_rows() -> list[dict[str, Any]]:
        return [r.as_json() for r in store_leaderboard(store).ratings]
