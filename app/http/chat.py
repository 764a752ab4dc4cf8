"""Chat over HTTP: health, versions, a chat turn (whole or streamed) and feedback.

    GET  /healthz         {"status": "ok"|"degraded", "live_version", "problem"?}
    GET  /api/version     {"live", "candidate", "versions": [...]}
    POST /api/chat        {"messages", "conversation_id"?, "max_new_tokens"?, "temperature"?}
                          -> {"conversation_id", "message_id", "content", "version"}
                          (?stream=true: server-sent events)
    POST /api/feedback    {"message_id", "kind", "value"?, "text"?} -> {"feedback_id"}

Routes are registered on the FastAPI app before Gradio is mounted on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.auth import Accounts
from app.chat import UNSAVED, ChatService
from app.http.common import bearer_user, error, int_field, json_body
from app.identity import Identity
from app.serving.backend import BackendError

log = logging.getLogger(__name__)


def install_chat_api(
    app: FastAPI, service: ChatService, identity: Identity, accounts: Accounts | None = None
) -> None:
    """Register the chat routes on `app` (after `install_errors`)."""
    store, backend = service.store, service.backend

    def user_id(request: Request) -> int:
        return bearer_user(request, identity, store, accounts)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # 200 even when degraded: the page still loads and says what is wrong, and a
        # container health check does not restart the web process for a model server's outage.
        # Not in the request thread pool, which a full queue of chats can occupy: fast under load
        problem = await asyncio.to_thread(backend.health)
        if problem is None:
            return {"status": "ok", "live_version": backend.live_version}
        return {"status": "degraded", "live_version": backend.live_version, "problem": problem}

    @app.get("/api/version")
    def version() -> dict[str, Any]:
        versions = store.versions("policy")
        candidate = next((v.name for v in reversed(versions) if v.status == "candidate"), None)
        return {
            "live": backend.live_version,
            "candidate": candidate,
            "versions": [{"name": v.name, "status": v.status} for v in versions],
        }

    @app.post("/api/chat", response_model=None)
    async def chat(request: Request, stream: bool = False) -> Any:
        body = await json_body(request)
        # store writes and generation block: run them off the event loop, so other
        # requests keep flowing and concurrent chats can be batched together
        return await run_in_threadpool(_chat, request, body, stream)

    def _chat(request: Request, body: dict[str, Any], stream: bool) -> Any:
        uid = user_id(request)
        params = service.sampling(body.get("temperature"), body.get("max_new_tokens"))
        conversation_id = int_field(body, "conversation_id", required=False)
        turn = service.start(
            uid, body.get("messages"), conversation_id=conversation_id, params=params
        )
        if stream:
            return StreamingResponse(_sse(service, turn), media_type="text/event-stream")
        return _complete(service, turn)

    @app.post("/api/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        return await run_in_threadpool(_feedback, request, body)

    def _feedback(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        uid = user_id(request)
        message_id = int_field(body, "message_id", required=True)
        stored = service.feedback(
            uid, message_id, body.get("kind"), body.get("value"), body.get("text")
        )
        return {"feedback_id": stored.id if stored else None}


def _complete(service: ChatService, turn: Any) -> Any:
    try:
        for _ in turn.deltas():
            pass
    except BackendError as exc:
        return error(503, str(exc))
    answer = service.finish(turn)
    return {
        "conversation_id": turn.conversation_id,
        "content": turn.text,
        "version": turn.reply.version,
        **_saved(turn, answer),
    }


def _saved(turn: Any, answer: Any) -> dict[str, Any]:
    """The stored answer's id, or `saved: false` and why when storage refused it."""
    if answer is None:
        return {
            "message_id": None,
            "n_tokens": turn.reply.n_tokens,
            "saved": False,
            "warning": UNSAVED,
        }
    return {"message_id": answer.id, "n_tokens": answer.n_tokens, "saved": True}


def _sse(service: ChatService, turn: Any) -> Iterator[str]:
    """Server-sent events: `{"delta": ...}` per chunk, then one `{"done": true, ...}`."""
    try:
        for delta in turn.deltas():
            yield f"data: {json.dumps({'delta': delta})}\n\n"
    except BackendError as exc:
        yield f"data: {json.dumps({'error': str(exc)})}\n\n"
        return
    finally:
        turn.reply.cancel()  # a client that went away stops its row early
    answer = service.finish(turn)
    done = {
        "done": True,
        "conversation_id": turn.conversation_id,
        "version": turn.reply.version,
        **_saved(turn, answer),
    }
    yield f"data: {json.dumps(done)}\n\n"
