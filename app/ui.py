"""The Gradio page: `build_demo(backend, store, config) -> gr.Blocks`.

Small named handlers turn Gradio events into calls on `ChatService` (and so on the
store and the backend). No globals: everything a handler needs comes through the
closure over the service or through per-browser state. A handler never shows a
traceback: bad input and model failures become a short `gr.Warning`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from app.arena import ArenaService
from app.arena_ui import arena_tabs
from app.auth import Accounts
from app.chat import UNSAVED, ChatService, InputError
from app.config import AuthConfig, Config
from app.dashboard_ui import dashboard_tab
from app.identity import (
    Identity,
    InvalidToken,
    ensure_browser_state_key,
    ensure_session_secret,
)
from app.limits import SessionLimit
from app.serving import BackendError, ChatBackend, SamplingParams
from app.swap import VersionSync
from storage import Store, StoreError, User
from trainer.schedule import TrainingScheduler

log = logging.getLogger(__name__)

USER_STORAGE_KEY = "rlhf-chat-user"
REPORT = "Report"  # the Chatbot's extra feedback option: stored as a `flag` on the answer


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
        arena_tabs(arena, identity, user_token)
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
        sign_in = _sign_in(identity, store, accounts, sessions)
        loaded = demo.load(sign_in, inputs=[user_token], outputs=[user_token]).then(
            lambda: _live_text(backend), outputs=[live]
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


def _live_text(backend: ChatBackend) -> str:
    return f"Live model version: **`{backend.live_version}`**"


def _oauth_installed() -> bool:
    """Gradio's Hugging Face sign-in needs authlib (`gradio[oauth]`; the image has it)."""
    import importlib.util

    if importlib.util.find_spec("authlib") is None:
        log.warning("on a Space but authlib is missing: no 'Sign in with Hugging Face' button")
        return False
    return True


def _sign_in(
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


def chat_tab(
    service: ChatService, identity: Identity, user_token: gr.BrowserState, live: gr.Markdown
) -> None:
    cfg = service.config
    chatbot = gr.Chatbot(
        label="Chat",
        editable="all",
        feedback_options=("Like", "Dislike", REPORT),
        height=480,
        elem_id="chatbot",
    )
    conversation_id = gr.State(None)
    message_ids = gr.State([])  # store ids, index-aligned with the chatbot's history
    with gr.Row():
        textbox = gr.Textbox(
            placeholder="Type a message and press Enter",
            show_label=False,
            scale=8,
            max_length=cfg.max_message_chars,
            elem_id="chat-input",
        )
        new_chat = gr.Button("New conversation", scale=1)
    with gr.Accordion("Sampling", open=False):
        temperature = gr.Slider(0.0, 2.0, value=cfg.temperature, step=0.05, label="Temperature")
        max_tokens = gr.Slider(
            1, cfg.max_new_tokens_limit, value=cfg.max_new_tokens, step=1, label="Max new tokens"
        )
    gr.Markdown(
        "👍/👎 rate an answer (click again to clear) · ✏️ edit an answer to say what it "
        "should have been · 🔄 retry for a new answer · ⚑ *Report* an answer that is "
        "harmful or abusive."
    )

    state = [chatbot, conversation_id, message_ids]
    textbox.submit(
        respond(service, identity),
        inputs=[textbox, *state, user_token, temperature, max_tokens],
        outputs=[textbox, *state, live],
    )
    chatbot.like(thumb(service, identity), inputs=[message_ids, user_token])
    chatbot.retry(
        retry(service, identity),
        inputs=[*state, user_token, temperature, max_tokens],
        outputs=[*state, live],
    )
    chatbot.edit(correct(service, identity), inputs=[*state, user_token], outputs=state)
    new_chat.click(lambda: ([], None, []), outputs=state, api_name="new_conversation")


def _history_for_model(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in history]


def respond(service: ChatService, identity: Identity):
    def respond(
        text: str,
        history: list[dict[str, Any]],
        conversation_id: int | None,
        ids: list[int | None],
        token: str | None,
        temperature: float,
        max_tokens: float,
    ) -> Iterator[tuple]:
        """Send the user's message and stream the answer into the chat."""
        history, ids = list(history or []), list(ids or [])
        try:
            uid = current_user(identity, token, service.store)
            params = _sampling(service, temperature, max_tokens)
            messages = [*_history_for_model(history), {"role": "user", "content": text}]
            turn = service.start(uid, messages, conversation_id=conversation_id, params=params)
        except InputError as exc:
            gr.Warning(exc.message)
            yield text, history, conversation_id, ids, gr.skip()
            return
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        ids += [turn.user_message.id, None]
        live = f"Live model version: **`{service.backend.live_version}`**"
        yield "", history, turn.conversation_id, ids, live
        yield from _stream_into(service, turn, history, ids, live)

    return respond


def _stream_into(service, turn, history, ids, live) -> Iterator[tuple]:
    try:
        for _ in turn.deltas():
            history[-1] = {"role": "assistant", "content": turn.text}
            yield gr.skip(), history, turn.conversation_id, ids, live
    except BackendError as exc:
        gr.Warning(str(exc))
        history.pop()
        ids.pop()
        yield gr.skip(), history, turn.conversation_id, ids, live
        return
    answer = service.finish(turn)
    if answer is None:
        gr.Warning(UNSAVED)
    ids[-1] = answer.id if answer is not None else None
    history[-1] = {"role": "assistant", "content": turn.text}
    yield gr.skip(), history, turn.conversation_id, ids, live


def _sampling(service: ChatService, temperature: Any, max_tokens: Any) -> SamplingParams:
    """The sliders' values; a script's call may send anything, and gets a message."""
    try:
        t, n = float(temperature), int(max_tokens)
    except (TypeError, ValueError, OverflowError) as exc:  # "hot", None, NaN or inf tokens
        raise InputError(400, "temperature and max new tokens must be numbers") from exc
    return service.sampling(t, n)


def _position(index: Any) -> Any:
    """A message's position from an event's index: an int, or [row, column]; an empty
    list (a script's call) would raise IndexError."""
    return (index[0] if index else None) if isinstance(index, list | tuple) else index


def _answer_index(history: list[dict[str, Any]], index: Any) -> int | None:
    i = _position(index)
    if not isinstance(i, int) or not 0 <= i < len(history):
        return None
    if history[i]["role"] != "assistant" and i + 1 < len(history):
        i += 1
    return i if history[i]["role"] == "assistant" else None


def thumb(service: ChatService, identity: Identity):
    reports = threading.Lock()

    def thumb(ids: list[int | None], token: str | None, data: gr.LikeData) -> None:
        """👍 stores 1, 👎 stores -1, clicking the chosen one again clears it; *Report*
        stores a `flag` feedback on the answer."""
        i = _position(data.index)
        message_id = ids[i] if isinstance(i, int) and 0 <= i < len(ids) else None
        if message_id is None:
            gr.Warning("This answer is not saved yet; wait until it has finished.")
            return
        try:
            uid = current_user(identity, token, service.store)
            if data.liked == REPORT:
                # one report per answer and user: the page sends a report event twice
                with reports:
                    if not any(
                        f.kind == "flag" and f.user_id == uid
                        for f in service.store.message_feedback(message_id)
                    ):
                        service.feedback(uid, message_id, "flag")
                gr.Info("Thanks: the answer is reported.")
                return
            value = 1 if data.liked is True else -1 if data.liked is False else None
            service.feedback(uid, message_id, "thumb", value)
        except InputError as exc:
            gr.Warning(exc.message)

    return thumb


def retry(service: ChatService, identity: Identity):
    def retry(history, conversation_id, ids, token, temperature, max_tokens, data: gr.RetryData):
        """A new answer to the same prompt; the old one is recorded as retried."""
        history, ids = list(history or []), list(ids or [])
        i = _answer_index(history, data.index)
        # history comes from the page, ids from the server: they may disagree in length
        if i is None or i >= len(ids) or ids[i] is None:
            gr.Warning("Only a saved answer can be retried.")
            yield history, conversation_id, ids, gr.skip()
            return
        try:
            params = _sampling(service, temperature, max_tokens)
            turn = service.retry(current_user(identity, token, service.store), ids[i], params)
        except InputError as exc:
            gr.Warning(exc.message)
            yield history, conversation_id, ids, gr.skip()
            return
        history, ids = history[:i] + [{"role": "assistant", "content": ""}], ids[:i] + [None]
        live = f"Live model version: **`{service.backend.live_version}`**"
        for update in _stream_into(service, turn, history, ids, live):
            yield update[1:]

    return retry


def correct(service: ChatService, identity: Identity):
    def correct(history, conversation_id, ids, token, data: gr.EditData):
        """An edited answer is stored as a correction of the original."""
        history, ids = list(history or []), list(ids or [])
        i = _position(data.index)
        if not isinstance(i, int) or not 0 <= i < min(len(history), len(ids)) or ids[i] is None:
            gr.Warning("This message cannot be edited.")
            return history, conversation_id, ids
        original = service.store.get_message(ids[i])
        if original.role != "assistant":
            gr.Warning("Only answers can be corrected; send a new message instead.")
            history[i] = {"role": "user", "content": original.content}
            return history, conversation_id, ids
        text = _flatten(data.value)
        try:
            service.feedback(
                current_user(identity, token, service.store), ids[i], "edit", text=text
            )
        except InputError as exc:
            gr.Warning(exc.message)
            history[i] = {"role": "assistant", "content": original.content}
            return history, conversation_id, ids
        history[i] = {"role": "assistant", "content": text}
        gr.Info("Thanks: your correction is saved.")
        return history, conversation_id, ids

    return correct


def _flatten(value: Any) -> str:
    from trainer.models import flatten_content

    return flatten_content(value)
