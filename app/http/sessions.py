"""Identities over HTTP: an anonymous session, a password sign-in, and the per-address
limit on the page's own sign-in form.

    POST /api/session   -> {"user_token": T, "user_id"}   send T as `Authorization: Bearer T`
    POST /api/login     {"name", "password"} -> {"user_token": T, "user_id"}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.auth import Accounts, TooManyAttempts
from app.chat import SIGN_IN_REQUIRED
from app.errors import InputError
from app.http.common import json_body
from app.identity import Identity
from app.limits import SessionLimit, client_address
from storage import Store


def install_session_api(
    app: FastAPI,
    store: Store,
    identity: Identity,
    accounts: Accounts | None = None,
    sessions: SessionLimit | None = None,
) -> None:
    """Register the session and sign-in routes; `sessions` limits new identities per
    client address."""

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
        body = await json_body(request)
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


def install_login_limit(app: FastAPI, accounts: Accounts, *, forwarded_header: str = "") -> None:
    """Count the page's sign-in form (Gradio's `POST /login`) against the per-address
    limit before Gradio checks the password; `POST /api/login` counts in `login`. The
    address is the connection's, or `serving.forwarded_header`'s (`app.limits`)."""

    @app.middleware("http")
    async def _limit_page_login(request: Request, call_next: Any) -> Any:
        if request.method == "POST" and request.url.path.rstrip("/") == "/login":
            peer = request.client.host if request.client else None
            address = client_address(request.headers, peer, forwarded_header)
            if accounts.passwords_required and not accounts.addresses.hit(address):
                return JSONResponse(
                    {"detail": "too many sign-in attempts from this address: wait a while"},
                    status_code=429,
                )
        return await call_next(request)
