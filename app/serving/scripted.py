"""`ScriptedBackend`: answers from a function, streamed word by word, for UI and API tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app.serving.backend import DEFAULT_PARAMS, ChatBackend, Reply


def echo_answer(messages: Sequence[dict[str, Any]], version: str) -> str:
    last = next((m for m in reversed(messages) if m["role"] == "user"), {"content": ""})
    return f"You said: {last['content']}"


class ScriptedBackend(ChatBackend):
    """Answers from `answer(messages, version) -> str`, streamed word by word."""

    def __init__(
        self, answer: Callable[[Sequence[dict[str, Any]], str], str] = echo_answer
    ) -> None:
        super().__init__()
        self._answer = answer

    def stream(self, messages, *, version=None, params=DEFAULT_PARAMS) -> Reply:
        messages, dropped = self.fit(messages)
        reply = self._new_reply(version)
        reply.dropped_turns = dropped
        try:
            words = self._answer(messages, reply.version).split(" ")
        except Exception as exc:  # a scripted failure is delivered like a model failure
            reply._fail(exc)
            return reply
        words = words[: params.max_new_tokens]
        for i, word in enumerate(words):
            reply._push(word if i == 0 else " " + word)
        reply._finish("stop" if len(words) else "length", len(words))
        return reply
