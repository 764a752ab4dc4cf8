"""The Chat tab: send a message and stream the answer; thumbs, reports, retries and
corrections on the answers.

Small named handlers turn Gradio events into calls on `ChatService` (and so on the
store and the backend). A handler never shows a traceback: bad input and model failures
become a short `gr.Warning`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from app.chat import UNSAVED, ChatService
from app.errors import InputError
from app.identity import Identity
from app.page.session import current_user
from app.serving.backend import BackendError, ChatBackend, SamplingParams

REPORT = "Report"  # the Chatbot's extra feedback option: stored as a `flag` on the answer


def live_text(backend: ChatBackend) -> str:
    return f"Live model version: **`{backend.live_version}`**"


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
        live = live_text(service.backend)
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
        live = live_text(service.backend)
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
