"""What every route group shares: the JSON error, the body parser, the bearer token,
the error handlers and the body-size guard, and the JSON 404 for unknown /api/ paths.

Every error is JSON `{"error": "..."}` with a 4xx status that says what was wrong
(`InputError` from the services carries it).
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import Accounts
from app.chat import SIGN_IN_REQUIRED
from app.errors import InputError, check_id
from app.identity import Identity, InvalidToken
from app.serving.backend import BackendError, Busy
from storage import NotFound, StorageUnavailable, Store

MAX_BODY_BYTES = 1_000_000
MAX_PAGE_BODY_BYTES = 8_000_000  # the page's own routes: a whole chat history, or an upload


def error(status: int, message: str, *, retry_after_s: float | None = None) -> JSONResponse:
    """The API's error: `{"error": message}`; with `retry_after_s`, a `Retry-After` header."""
    headers = None
    if retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or `InputError` (400 not one, 413 too large)."""
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


def int_field(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InputError(400, f"{name} is required")
        return None
    return check_id(value, name)


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer T`, None without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def bearer_user(
    request: Request, identity: Identity, store: Store, accounts: Accounts | None = None
) -> int:
    """The id of the user whose token the request carries as `Authorization: Bearer T`;
    with `accounts`, refuses an anonymous user where sign-in is required."""
    token = bearer_token(request)
    if token is None:
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


def install_errors(app: FastAPI) -> None:
    """Register the error handlers and the body-size guard on `app` (first, before any
    route group)."""

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


def install_not_found(app: FastAPI) -> None:
    """Any other /api/ path or method gets the API's JSON 404. Call after the last API
    route and before the page is mounted at "/": the page would answer in its own format."""

    @app.api_route(
        "/api/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def not_found(request: Request, path: str) -> JSONResponse:
        return error(404, f"no API route {request.method} /api/{path}")
