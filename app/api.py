"""The HTTP JSON API beside the page, for scripts, the simulator and tests.

Every error is JSON `{"error": "..."}` with a 4xx status that says what was wrong.
Identity: `POST /api/session` returns a token; send it as `Authorization: Bearer T`.
Routes are registered on the FastAPI app before Gradio is mounted on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import Accounts, TooManyAttempts
from app.chat import SIGN_IN_REQUIRED, UNSAVED, ChatService, InputError, check_id
from app.identity import Identity, InvalidToken
from app.limits import SessionLimit
from app.serving import BackendError, Busy
from storage import NotFound, StorageUnavailable, Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_PAGE_BODY_BYTES = 8_000_000  # the page's own routes: a whole chat history, or an upload


def error(status: int, message: str, *, retry_after_s: float | None = None) -> JSONResponse:
    """The API's error: `{"error": message}`; with `retry_after_s`, a `Retry-After` header."""
    headers = None
    if retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _json_body(request: Request) -> dict[str, Any]:
    # read in chunks: a chunked upload has no content-length for the middleware to refuse
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise InputError(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(400, f"the body is not valid JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # integers over 4300 digits, deep nesting
        raise InputError(400, "the body is too deeply nested or has a too long number") from exc
    if not isinstance(body, dict):
        raise InputError(400, "the body must be a JSON object")
    try:  # "\ud800" parses, but a lone surrogate cannot be stored as UTF-8 text
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InputError(400, "a string in the body has a lone surrogate: not text") from exc
    return body


def _int_field(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InputError(400, f"{name} is required")
        return None
    return check_id(value, name)


def bearer_user(
    request: Request, identity: Identity, store: Store, accounts: Accounts | None = None
) -> int:
    """The id of the user whose token the request carries as `Authorization: Bearer T`;
    with `accounts`, refuses an anonymous user where sign-in is required."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise InputError(401, "send a user token as 'Authorization: Bearer T' (POST /api/session)")
    try:
        uid = identity.verify(token.strip())
        user = store.get_user(uid)
    except InvalidToken as exc:  # forged, expired, revoked, or for a user who is gone
        raise InputError(401, str(exc)) from exc
    except NotFound as exc:
        raise InputError(401, "the user token is not valid") from exc
    if accounts is not None and not accounts.may_use(user):
        # an anonymous token from before sign-in was required
        raise InputError(403, SIGN_IN_REQUIRED)
    return uid


def install_api(
    app: FastAPI,
    service: ChatService,
    identity: Identity,
    accounts: Accounts | None = None,
    sessions: SessionLimit | None = None,
) -> None:
    """Register the routes, the error handlers and the body-size guard on `app`;
    `sessions` limits new identities per client address."""
    store, backend = service.store, service.backend

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return error(exc.status, exc.message, retry_after_s=exc.retry_after_s)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
        # the model could not take or write the answer: say why, never a bare 500
        retry = exc.retry_after_s if isinstance(exc, Busy) else None
        return error(503, str(exc), retry_after_s=retry)

    @app.exception_handler(StorageUnavailable)
    async def _storage_error(request: Request, exc: StorageUnavailable) -> JSONResponse:
        return error(503, str(exc))  # a full or read-only disk: say so, never a bare 500

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "; ".join(str(e.get("msg")) for e in exc.errors()) or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path.startswith("/api/") or request.url.path == "/healthz":
            return error(exc.status_code, str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit():
            limit = MAX_BODY_BYTES if request.url.path.startswith("/api/") else MAX_PAGE_BODY_BYTES
            if int(length) > limit:
                return error(413, f"request body too large (at most {limit} bytes)")
        return await call_next(request)

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

    @app.post("/api/session")
    def session(request: Request) -> dict[str, Any]:
        if accounts is not None and not accounts.anonymous_allowed:
            raise InputError(403, SIGN_IN_REQUIRED)
        if sessions is not None:
            peer = request.client.host if request.client else None
            sessions.admit(sessions.address(request.headers, peer))
        user = store.create_user("anon")
        return {"user_token": identity.issue(user.id), "user_id": user.id}

    @app.post("/api/login")
    async def login(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise InputError(400, "send {name, password}")
        peer = request.client.host if request.client else None
        address = sessions.address(request.headers, peer) if sessions is not None else peer
        # scrypt is slow on purpose: keep it off the event loop
        user = await run_in_threadpool(_password_user, name, password, address)
        return {"user_token": identity.issue(user.id), "user_id": user.id}

    def _password_user(name: str, password: str, address: str | None) -> Any:
        try:  # limited per address and per name (`auth.login_*`)
            user = accounts.login(name, password, address) if accounts is not None else None
        except TooManyAttempts as exc:
            raise InputError(429, str(exc)) from exc
        if user is None:
            raise InputError(401, "wrong name or password")
        return user

    @app.post("/api/chat", response_model=None)
    async def chat(request: Request, stream: bool = False) -> Any:
        body = await _json_body(request)
        # store writes and generation block: run them off the event loop, so other
        # requests keep flowing and concurrent chats can be batched together
        return await run_in_threadpool(_chat, request, body, stream)

    def _chat(request: Request, body: dict[str, Any], stream: bool) -> Any:
        uid = user_id(request)
        params = service.sampling(body.get("temperature"), body.get("max_new_tokens"))
        conversation_id = _int_field(body, "conversation_id", required=False)
        turn = service.start(
            uid, body.get("messages"), conversation_id=conversation_id, params=params
        )
        if stream:
            return StreamingResponse(_sse(service, turn), media_type="text/event-stream")
        return _complete(service, turn)

    @app.post("/api/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return await run_in_threadpool(_feedback, request, body)

    def _feedback(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        uid = user_id(request)
        message_id = _int_field(body, "message_id", required=True)
        stored = service.feedback(
            uid, message_id, body.get("kind"), body.get("value"), body.get("text")
        )
        return {"feedback_id": stored.id if stored else None}


def install_api_not_found(app: FastAPI) -> None:
    """Any other /api/ path or method gets the API's JSON 404. Call after the last API
    route and before the page is mounted at "/": the page would answer in its own format."""

    @app.api_route(
        "/api/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def not_found(request: Request, path: str) -> JSONResponse:
        return error(404, f"no API route {request.method} /api/{path}")


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
