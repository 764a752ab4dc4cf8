"""Chat turns and feedback: what the page and the HTTP API both do, in one place.

`ChatService` checks a request, stores the user's message, starts the answer on the
backend, and stores the answer with the model version that wrote it once it is
complete. Bad input raises `InputError` with an HTTP status and a message for the
user, before anything is stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from app.config import ServingConfig
from app.errors import InputError, check_id, store_errors_as_input_errors
from app.limits import SlidingWindow
from app.serving.backend import Busy, ChatBackend, Reply, SamplingParams
from storage import Feedback, Message, StorageUnavailable, Store
from storage import NotFound as StoreNotFound

log = logging.getLogger(__name__)

ROLES_FROM_CLIENTS = ("user", "assistant")


BUSY = "The server is busy: try again in a few seconds."

UNSAVED = (
    "The answer could not be saved (the server's storage is unavailable): it cannot be "
    "rated or corrected. Votes and ratings fail until storage is back."
)


SIGN_IN_REQUIRED = (
    "this server needs a sign-in: sign in on the page, or POST /api/login {name, password}"
)


@dataclass
class Turn:
    """An answer on its way: stream `deltas()`, then `finish()` stores it."""

    conversation_id: int | None
    user_message: Message | None  # None: the store could not take it; the answer is unsaved
    reply: Reply
    sampling: SamplingParams
    text: str = ""

    def deltas(self) -> Iterator[str]:
        for delta in self.reply:
            self.text += delta
            yield delta


class ChatService:
    def __init__(
        self,
        store: Store,
        backend: ChatBackend,
        config: ServingConfig,
        *,
        anonymous_allowed: bool = True,
    ) -> None:
        self.store = store
        self.backend = backend
        self.config = config
        self.anonymous_allowed = anonymous_allowed  # False: `auth.require_sign_in`
        self.limiter = SlidingWindow(config.chats_per_window, config.chat_window_s)

    def check_user(self, user_id: int) -> None:
        """Refuse an anonymous user where sign-in is required. Checked here, where the
        page and the API meet, so neither path can skip it."""
        if self.anonymous_allowed:
            return
        try:
            user = self.store.get_user(user_id)
        except StoreNotFound as exc:
            raise InputError(401, "the user token is not valid") from exc
        if user.kind == "anon":
            raise InputError(403, SIGN_IN_REQUIRED)

    def count_answers(self, user_id: int, n: int = 1) -> None:
        """`n` more answers for `user_id` (a battle is two), or HTTP 429 past
        `serving.chats_per_window`; HTTP 503 first when the backend's queue has no room
        for them (then nothing is counted)."""
        if not self.backend.has_room(n):
            raise InputError(503, BUSY, retry_after_s=Busy.retry_after_s)
        if not self.limiter.hit(user_id, n):
            raise InputError(
                429,
                f"too many messages: at most {self.config.chats_per_window} every "
                f"{self.config.chat_window_s:g} seconds (a battle counts as two); wait a moment",
                retry_after_s=self.config.chat_window_s,
            )

    def stream(self, context: list[dict[str, str]], **kwargs: Any) -> Reply:
        """Start an answer on the backend; a full queue is HTTP 503 (`Retry-After`)."""
        try:
            return self.backend.stream(context, **kwargs)
        except Busy as exc:
            raise InputError(503, BUSY, retry_after_s=exc.retry_after_s) from exc

    # -- checks -----------------------------------------------------------------------

    def clean_messages(self, messages: Any) -> list[dict[str, str]]:
        """The conversation as plain {role, content} dicts, ending with the user's turn."""
        if not isinstance(messages, list) or not messages:
            raise InputError(400, "messages must be a non-empty list of {role, content}")
        if len(messages) > self.config.max_messages:
            raise InputError(413, f"too many messages (at most {self.config.max_messages})")
        cleaned = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InputError(400, f"message {i} must have a role and a content")
            if m["role"] not in ROLES_FROM_CLIENTS:
                raise InputError(400, f"message {i}: role must be 'user' or 'assistant'")
            content = _as_text(m["content"])
            if content is None:
                raise InputError(400, f"message {i}: content must be a string")
            if not _is_unicode(content):  # "\ud800" from the page's JSON; SQLite refuses it
                raise InputError(400, f"message {i} has a lone surrogate: not text")
            if len(content) > self.config.max_message_chars:
                raise InputError(
                    413,
                    f"message {i} is too long (at most {self.config.max_message_chars} characters)",
                )
            cleaned.append({"role": m["role"], "content": content})
        if cleaned[-1]["role"] != "user":
            raise InputError(400, "the last message must be the user's")
        if not cleaned[-1]["content"].strip():
            raise InputError(400, "the message is empty")
        return cleaned

    def sampling(self, temperature: Any = None, max_new_tokens: Any = None) -> SamplingParams:
        t = self.config.temperature if temperature is None else temperature
        n = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        # ints are finite, and math.isfinite raises OverflowError on huge ones
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise InputError(400, "temperature must be a number")
        if isinstance(t, float) and not math.isfinite(t):
            raise InputError(400, "temperature must be a number")
        if not 0.0 <= t <= 2.0:
            raise InputError(400, "temperature must be between 0 and 2")
        if isinstance(n, bool) or not isinstance(n, int):
            raise InputError(400, "max_new_tokens must be an integer")
        if not 1 <= n <= self.config.max_new_tokens_limit:
            raise InputError(
                400, f"max_new_tokens must be between 1 and {self.config.max_new_tokens_limit}"
            )
        return SamplingParams(temperature=float(t), max_new_tokens=n)

    # -- chat -------------------------------------------------------------------------

    def start(
        self,
        user_id: int,
        messages: Any,
        *,
        conversation_id: int | None = None,
        params: SamplingParams | None = None,
    ) -> Turn:
        """Check the request, store the user's message and start the answer.

        The model sees what is stored, so that the context recorded for an answer is the
        context it was written for: the conversation so far as stored (the chain of
        parents up to its newest message) and the new user message. Earlier turns a
        client sends are not used; a new conversation starts from its last user message.
        Only when storage is unavailable (nothing is stored) does the model see the
        turns as sent.
        """
        cleaned = self.clean_messages(messages)
        params = params or self.sampling()
        self.check_user(user_id)
        self.count_answers(user_id)
        context = cleaned[-1:]
        try:
            if conversation_id is None:
                conversation_id = self.store.create_conversation(
                    user_id, title=cleaned[-1]["content"][:80]
                ).id
            else:
                self.store.owned_conversation(conversation_id, user_id)
            previous = self.store.conversation_messages(conversation_id)
            parent_id = previous[-1].id if previous else None
            context = [_turn(m) for m in _path_to(previous, parent_id)] + cleaned[-1:]
            user_message: Message | None = self.store.add_message(
                conversation_id, "user", cleaned[-1]["content"], parent_id=parent_id
            )
        except StorageUnavailable as exc:
            # a full or read-only disk must not silence the chat: answer, unsaved
            log.warning("chat answered without storing it: %s", exc)
            user_message, context = None, cleaned
        except Exception as exc:
            raise store_errors_as_input_errors(exc) from exc
        reply = self.stream(context, params=params)
        return Turn(conversation_id, user_message, reply, params)

    def finish(self, turn: Turn) -> Message | None:
        """Store the complete answer (call after `deltas()` is exhausted); None when it
        could not be stored (`UNSAVED` says why to the user)."""
        if turn.user_message is None:
            return None
        try:
            return self._store_answer(turn)
        except StorageUnavailable as exc:
            log.warning("an answer could not be stored: %s", exc)
            return None

    def _store_answer(self, turn: Turn) -> Message:
        assert turn.conversation_id is not None and turn.user_message is not None
        return self.store.add_message(
            turn.conversation_id,
            "assistant",
            turn.text,
            parent_id=turn.user_message.id,
            version=turn.reply.version,
            sampling=sampling_record(turn.sampling, turn.reply),
            latency_ms=turn.reply.latency_ms,
            n_tokens=turn.reply.n_tokens,
        )

    def answer(self, user_id: int, messages: Any, **kwargs: Any) -> tuple[Turn, Message | None]:
        """A whole turn, not streamed."""
        turn = self.start(user_id, messages, **kwargs)
        for _ in turn.deltas():
            pass
        return turn, self.finish(turn)

    def retry(self, user_id: int, message_id: int, params: SamplingParams | None = None) -> Turn:
        """A new sample for the same prompt; the old answer is marked retried."""
        self.check_user(user_id)
        old = self._owned_answer(message_id, user_id)
        self.count_answers(user_id)
        history = self.store.conversation_messages(old.conversation_id)
        context = [_turn(m) for m in _path_to(history, old.parent_id)]
        self.store.add_feedback(message_id, user_id, "retry")
        user_message = self.store.get_message(old.parent_id) if old.parent_id else None
        if user_message is None or not context:
            raise InputError(400, "this answer has no prompt to retry")
        params = params or self.sampling()
        reply = self.stream(context, params=params)
        return Turn(old.conversation_id, user_message, reply, params)

    # -- feedback ---------------------------------------------------------------------

    def feedback(
        self, user_id: int, message_id: Any, kind: Any, value: Any = None, text: Any = None
    ) -> Feedback | None:
        """Thumb (1, -1, or 0/None to clear), edit (corrected text) or flag on one of the
        user's answers."""
        check_id(message_id, "message_id")
        if kind not in ("thumb", "edit", "flag"):
            raise InputError(400, "kind must be 'thumb', 'edit' or 'flag'")
        # true and 1.0 compare equal to 1, but are not what a client meant to send
        if kind == "thumb" and not (value is None or (type(value) is int and value in (1, -1, 0))):
            raise InputError(400, "a thumb's value is 1 (up), -1 (down) or 0 (clear)")
        if text is not None and not isinstance(text, str):
            raise InputError(400, "text must be a string")
        if text is not None and not _is_unicode(text):
            raise InputError(400, "the text has a lone surrogate: not text")
        if kind == "edit" and (not text or not text.strip()):
            raise InputError(400, "a correction needs the corrected text")
        if text is not None and len(text) > self.config.max_message_chars:  # a flag's too
            raise InputError(
                413, f"the text is too long (at most {self.config.max_message_chars} characters)"
            )
        self.check_user(user_id)
        self._owned_answer(message_id, user_id)
        try:
            if kind == "thumb":
                return self.store.set_thumb(message_id, user_id, value or None)
            return self.store.add_feedback(message_id, user_id, kind, text=text)
        except Exception as exc:
            raise store_errors_as_input_errors(exc) from exc

    def _owned_answer(self, message_id: int, user_id: int) -> Message:
        try:
            message = self.store.owned_message(message_id, user_id)
        except Exception as exc:
            raise store_errors_as_input_errors(exc) from exc
        if message.role != "assistant":
            raise InputError(400, f"message {message_id} is not an answer")
        return message


def sampling_record(params: SamplingParams, reply: Reply) -> dict[str, Any]:
    """What is stored as an answer's sampling: the parameters, and how many of the
    oldest turns of its stored context the model did not see (`serving.max_prompt_tokens`)."""
    record = params.as_dict()
    if reply.dropped_turns:
        record["dropped_turns"] = reply.dropped_turns
    return record


def _turn(message: Message) -> dict[str, str]:
    return {"role": message.role, "content": message.content}


def _as_text(content: Any) -> str | None:
    """A string, a Gradio text block (`{"type": "text", "text": ...}`) or a list of them, as
    one string; None for anything else, which would otherwise become text silently (5 -> "5",
    nested lists recursively)."""
    parts = content if isinstance(content, list) else [content]
    texts = [p.get("text") if isinstance(p, dict) else p for p in parts]
    if not all(isinstance(t, str) for t in texts):
        return None
    return "".join(texts)


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _path_to(history: Sequence[Message], last_id: int | None) -> list[Message]:
    """The chain of messages from the conversation's start to `last_id`."""
    by_id = {m.id: m for m in history}
    chain = []
    while last_id is not None and last_id in by_id:
        chain.append(by_id[last_id])
        last_id = by_id[last_id].parent_id
    return chain[::-1]
