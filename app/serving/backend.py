"""The `ChatBackend` seam: what every serving backend offers the app.

    ChatBackend.stream(messages, *, version=None, params) -> Reply   (iterate: text deltas)
    ChatBackend.versions() / load(version, path) / unload(version) / set_live(version)

Also the pieces every backend shares: `Reply` (one answer being generated),
`SamplingParams`, the error tree (`BackendError`, `UnknownVersion`, `Busy`) and
`fit_context` (the prompt bound). The implementations live beside it: `local`,
`remote`, `scripted`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

BASE_VERSION = "base"


class BackendError(RuntimeError):
    """The backend could not produce an answer; the message is safe to show a user."""


class UnknownVersion(BackendError):
    """A request named a model version this backend has not loaded."""


BUSY_RETRY_AFTER_S = 5


class Busy(BackendError):
    """The backend's queue is full (`serving.max_queue`): the request was not taken."""

    retry_after_s = BUSY_RETRY_AFTER_S

    def __init__(self) -> None:
        super().__init__("the server is busy: try again in a few seconds")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    """0 means greedy."""
    max_new_tokens: int = 256
    top_p: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "top_p": self.top_p,
        }


DEFAULT_PARAMS = SamplingParams()
_DONE = object()


class Reply:
    """One answer being generated. Iterate for text deltas; `version` is fixed at once,
    `n_tokens` and `finish_reason` ("stop", "length") are set when iteration ends."""

    def __init__(self, version: str, *, on_end: Callable[[], None] | None = None) -> None:
        self.version = version
        self.dropped_turns = 0  # the oldest turns left out to fit `serving.max_prompt_tokens`
        self._on_end = on_end  # frees the request's place in the backend's queue, once
        self.n_tokens = 0
        self.finish_reason: str | None = None
        self.started_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.cancelled = threading.Event()
        self._chunks: queue.Queue[Any] = queue.Queue()

    # producer side ------------------------------------------------------------------
    def _push(self, delta: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._chunks.put(delta)

    def _finish(self, reason: str, n_tokens: int) -> None:
        self.n_tokens, self.finish_reason = n_tokens, reason
        self._ended()  # before the reader hears of it: its next request finds the room
        self._chunks.put(_DONE)

    def _fail(self, error: BaseException) -> None:
        self.finish_reason = "error"
        self._ended()
        self._chunks.put(error)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    # consumer side ------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise BackendError(str(item)) from item
            yield item

    def text(self) -> str:
        """Wait for the whole answer."""
        return "".join(self)

    def cancel(self) -> None:
        """Stop generating this row early (the client went away)."""
        self.cancelled.set()

    @property
    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started_at) * 1000)


class ChatBackend:
    """The seam between the app and whatever generates answers.

    Two bounds apply to every backend (`configure`): at most `max_queue` answers waiting
    or being generated (a request past it raises `Busy` and is not taken), and prompts
    of at most `max_prompt_tokens` (the oldest turns are left out, see `fit_context`;
    `count_tokens` estimates a prompt's length, `LocalBackend` counts with its tokenizer).
    """

    max_queue: int | None = None
    max_prompt_tokens: int | None = None

    def __init__(self) -> None:
        self._live = BASE_VERSION
        self._loaded: dict[str, str | None] = {BASE_VERSION: None}
        self._pending = 0
        self._pending_lock = threading.Lock()

    def configure(self, *, max_queue: int | None, max_prompt_tokens: int | None) -> None:
        self.max_queue, self.max_prompt_tokens = max_queue, max_prompt_tokens

    # -- the queue bound --------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Answers taken and not yet finished (waiting or being generated)."""
        return self._pending

    def has_room(self, n: int = 1) -> bool:
        """Whether `n` more answers would be taken now (a check; `stream` decides)."""
        return self.max_queue is None or self._pending + n <= self.max_queue

    def _new_reply(self, version: str | None) -> Reply:
        """A reply for `version` that holds a place in the queue until it ends; `Busy`
        when the queue is full."""
        name = self.resolve(version)
        with self._pending_lock:
            if self.max_queue is not None and self._pending >= self.max_queue:
                raise Busy()
            self._pending += 1
        return Reply(name, on_end=self._release)

    def _release(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    # -- the prompt bound -------------------------------------------------------------

    def count_tokens(self, messages: Sequence[dict[str, Any]]) -> int:
        """An estimate without a tokenizer: one token per 3 characters of text (English
        runs about 4), plus 4 per turn for the chat template's markers."""
        return sum(len(str(m.get("content", ""))) // 3 + 4 for m in messages)

    def fit(self, messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """`messages` within `max_prompt_tokens`, and how many turns were left out."""
        if self.max_prompt_tokens is None:
            return list(messages), 0
        return fit_context(messages, self.count_tokens, self.max_prompt_tokens)

    @property
    def live_version(self) -> str:
        return self._live

    def versions(self) -> list[str]:
        return list(self._loaded)

    def resolve(self, version: str | None) -> str:
        name = version or self._live
        if name not in self._loaded:
            raise UnknownVersion(f"model version {name!r} is not loaded")
        return name

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        version: str | None = None,
        params: SamplingParams = SamplingParams(),
    ) -> Reply:
        raise NotImplementedError

    def load(self, version: str, path: str) -> None:
        self._loaded[version] = path

    def unload(self, version: str) -> None:
        if version == self._live:
            raise BackendError(f"cannot unload the live version {version!r}")
        if version != BASE_VERSION:
            self._loaded.pop(version, None)

    def set_live(self, version: str) -> None:
        self._live = self.resolve(version)

    def health(self) -> str | None:
        """None when the backend can answer, else a short description of what is wrong
        (a remote model server that is down); `/healthz` reports it as degraded."""
        return None

    def close(self) -> None:
        pass


def fit_context(
    messages: Sequence[dict[str, Any]],
    count: Callable[[Sequence[dict[str, Any]]], int],
    budget: int,
) -> tuple[list[dict[str, Any]], int]:
    """The most recent turns of `messages` whose prompt `count`s at most `budget` tokens,
    and how many turns were left out.

    Leading system turns and the last user turn are always kept whole (so a prompt may
    exceed `budget` by what they alone take; the message length limit bounds that); the
    kept history starts at a user turn. A binary search over where the kept turns start:
    a few `count` calls, not one per turn.
    """
    messages = list(messages)
    if count(messages) <= budget:
        return messages, 0
    n_system = 0
    while n_system < len(messages) and messages[n_system].get("role") == "system":
        n_system += 1
    system, rest = messages[:n_system], messages[n_system:]
    starts = [i for i, m in enumerate(rest) if m.get("role") == "user"]
    if not starts:
        return messages, 0
    lo, hi = 0, len(starts) - 1  # the last start (the last user turn) is kept regardless
    while lo < hi:
        mid = (lo + hi) // 2
        if count(system + rest[starts[mid] :]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    start = starts[lo]
    return system + rest[start:], start
