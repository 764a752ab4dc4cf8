"""Who is using the page: sign-in on load (anonymous, password or Hugging Face), the
user token kept in the browser, and `current_user`, which every handler asks first.

Every component prop is public (`/config`): the browser state gets its own key, never
the token key, and every handler checks who calls it (each is an API route too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from starlette.concurrency import run_in_threadpool

from app.auth import Accounts, TooManyAttempts
from app.config import AuthConfig
from app.errors import InputError
from app.identity import Identity, InvalidToken
from app.limits import SessionLimit
from storage import Store, StoreError, User

USER_STORAGE_KEY = "rlhf-chat-user"


def sign_in(
    identity: Identity,
    store: Store,
    accounts: Accounts | None = None,
    sessions: SessionLimit | None = None,
):
    accounts = accounts or Accounts(AuthConfig(), store)

    def sign_in(
        token: str | None,
        request: gr.Request = None,  # type: ignore[assignment]
        profile: gr.OAuthProfile | None = None,
    ) -> str | None:
        """The signed-in person's identity (password or Hugging Face), else the browser's
        anonymous one, created on the first visit (None where sign-in is required)."""
        named = signed_in_as(request, profile)
        try:
            current: User | None = store.get_user(identity.verify(token))
        except (InvalidToken, StoreError):
            current = None
        # a valid token is renewed on each visit: it expires `auth.user_token_days` after
        # the last one, not after the first
        if named is not None:
            return identity.issue(accounts.signed_in_user(*named).id)
        if not accounts.anonymous_allowed:
            return None  # handlers then ask the person to sign in
        if current is not None and current.kind == "anon":
            return identity.issue(current.id)
        if sessions is not None:  # a first visit, or signed out: a new identity, if allowed
            try:
                sessions.admit(_page_address(sessions, request))
            except InputError as exc:
                gr.Warning(exc.message)
                return None
        return identity.issue(store.create_user("anon").id)

    return sign_in


def _page_address(sessions: SessionLimit, request: Any) -> str:
    client = getattr(request, "client", None)
    return sessions.address(getattr(request, "headers", None) or {}, getattr(client, "host", None))


def signed_in_as(request: Any, profile: Any) -> tuple[str, str] | None:
    """(kind, name) of whoever signed in on this page: Gradio's password form sets
    `request.username`, the Hugging Face button gives an OAuth profile."""
    if profile is not None and getattr(profile, "username", None):
        return ("oauth", profile.username)
    username = getattr(request, "username", None)
    if username:
        return ("password", username)
    return None


def current_user(identity: Identity, token: str | None, store: Store | None = None) -> int:
    """The token's user id; with `store`, only a user it has (a token signed for a user a
    restored database lacks would otherwise fail on a foreign key)."""
    try:
        uid = identity.verify(token)
        if store is not None:
            store.get_user(uid)
        return uid
    except (InvalidToken, StoreError) as exc:
        raise InputError(
            401, "you are not signed in: sign in at the top of the page, or reload it"
        ) from exc


def page_login(accounts: Accounts) -> Callable[[str, str], object]:
    """For Gradio's login form: an async check that keeps scrypt off the event loop and
    counts failures per name (the address limit is a middleware: `app.http.sessions`)."""

    async def check(name: str, password: str) -> bool:
        try:
            return await run_in_threadpool(accounts.login, name, password) is not None
        except TooManyAttempts:
            return False

    return check
