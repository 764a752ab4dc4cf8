"""The Gradio page: `build_demo(backend, store, config) -> gr.Blocks`.

Tabs Chat, Arena, Leaderboard and (in the running server) Dashboard, each built by its
module in this room; sign-in runs on load. No globals: everything a handler needs comes
through the closure over a service or through per-browser state.
"""

from __future__ import annotations

import logging

import gradio as gr

from app.arena import ArenaService
from app.auth import Accounts
from app.chat import ChatService
from app.config import Config
from app.identity import Identity, ensure_browser_state_key, ensure_session_secret
from app.limits import SessionLimit
from app.page.arena import arena_tab
from app.page.chat import chat_tab, live_text
from app.page.dashboard import dashboard_tab
from app.page.leaderboard import leaderboard_tab
from app.page.session import USER_STORAGE_KEY, sign_in
from app.serving.backend import ChatBackend
from app.serving.swap import VersionSync
from storage import Store
from trainer.schedule import TrainingScheduler

log = logging.getLogger(__name__)


def build_demo(
    backend: ChatBackend,
    store: Store,
    config: Config,
    *,
    sync: VersionSync | None = None,
    scheduler: TrainingScheduler | None = None,
    chat: ChatService | None = None,
    arena: ArenaService | None = None,
    accounts: Accounts | None = None,
    identity: Identity | None = None,
    sessions: SessionLimit | None = None,
) -> gr.Blocks:
    """The page. With `sync` and `scheduler` (the running server's) it has a Dashboard;
    `chat` and `arena` share the HTTP API's services (one vote limiter for both), and
    `identity` the API's user tokens.

    Every component prop is public (`/config`): the browser state gets its own key, never
    the token key, and every handler checks who calls it (each is an API route too)."""
    accounts = accounts or Accounts(config.auth, store)
    if identity is None:
        secret = ensure_session_secret(config.auth.session_secret, config.storage.data_dir)
        identity = Identity(secret, store=store, max_age_s=accounts.token_max_age_s)
    service = chat or ChatService(
        store, backend, config.serving, anonymous_allowed=accounts.anonymous_allowed
    )
    arena = arena or ArenaService(service, config.arena)
    browser_key = ensure_browser_state_key(config.storage.data_dir)
    with gr.Blocks(title="rlhf-chat") as demo:
        user_token = gr.BrowserState(None, storage_key=USER_STORAGE_KEY, secret=browser_key)
        with gr.Row():
            live = gr.Markdown(elem_id="live-version")
            if accounts.hugging_face and _oauth_installed():
                if not accounts.anonymous_allowed:
                    gr.Markdown("Sign in with Hugging Face to chat and vote.")
                gr.LoginButton(size="sm", scale=0)
        with gr.Tab("Chat"):
            chat_tab(service, identity, user_token, live)
        with gr.Tab("Arena"):
            arena_tab(arena, identity, user_token)
        with gr.Tab("Leaderboard") as tab:
            leaderboard_tab(store, tab)
        if sync is not None and scheduler is not None:
            with gr.Tab("Dashboard"):
                refresh, inputs, outputs = dashboard_tab(
                    store,
                    sync,
                    scheduler,
                    config.auth.admin_token,
                    admin_user=accounts.admin_check(identity),
                    user_token=user_token,
                )
        on_load = sign_in(identity, store, accounts, sessions)
        loaded = demo.load(on_load, inputs=[user_token], outputs=[user_token]).then(
            lambda: live_text(backend), outputs=[live]
        )
        if sync is not None and scheduler is not None:  # after sign-in: an admin's session
            loaded.then(
                refresh,
                inputs=inputs,
                outputs=outputs,
                show_progress="hidden",
                api_visibility="private",
            )
    return demo


def _oauth_installed() -> bool:
    """Gradio's Hugging Face sign-in needs authlib (`gradio[oauth]`; the image has it)."""
    import importlib.util

    if importlib.util.find_spec("authlib") is None:
        log.warning("on a Space but authlib is missing: no 'Sign in with Hugging Face' button")
        return False
    return True
