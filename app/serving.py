"""Serving backends: the `ChatBackend` seam and its implementations.

    ChatBackend.stream(messages, *, version=None, params) -> Reply   (iterate: text deltas)
    ChatBackend.versions() / load(version, path) / unload(version) / set_live(version)

`LocalBackend` runs transformers + peft in this process. One worker thread owns the
model: it batches the chats that are waiting (one `generate` call, each row with its
own adapter through peft's `adapter_names`, its own temperature and length limit),
and it applies adapter loads, unloads and live switches *between* batches, in the
order they were asked. So no request ever sees a half-loaded adapter, a request
resolved to a version finishes on that version, and nothing calls `set_adapter`.

`ScriptedBackend` answers from a function, for UI and API tests.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BASE_VERSION = "base"
PEFT_BASE_ADAPTER = "__base__"  # peft's name for "no adapter" inside adapter_names


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


_DONE = object()
_STOP = object()  # tells the generation worker to exit


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


# -- scripted --------------------------------------------------------------------------


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

    def stream(self, messages, *, version=None, params=SamplingParams()) -> Reply:
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


# -- local (transformers + peft) -------------------------------------------------------


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    reply: Reply


@dataclass
class _Command:
    action: Callable[[], None]
    done: Future = field(default_factory=Future)


class LocalBackend(ChatBackend):
    """One base model in this process, one LoRA adapter per loaded version."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 8,
        batch_window_s: float = 0.01,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        self._work: queue.Queue[_Request | _Command | object] = queue.Queue()
        self._lock = threading.Lock()  # guards the name tables read by request threads
        self._worker = threading.Thread(target=self._run, name="generation-worker", daemon=True)
        self._worker.start()

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", **kwargs: Any) -> LocalBackend:
        from trainer.models import load_causal_lm, load_tokenizer

        return cls(load_causal_lm(path, device=device), load_tokenizer(path), **kwargs)

    # -- public API -------------------------------------------------------------------

    def stream(self, messages, *, version=None, params=SamplingParams()) -> Reply:
        from trainer.models import chat_prompt_ids

        if not self.has_room():  # before the tokenizer's work on a long history
            raise Busy()
        messages, dropped = self.fit(messages)
        prompt_ids = chat_prompt_ids(self.tokenizer, messages)
        with self._lock:
            reply = self._new_reply(version)
        reply.dropped_turns = dropped
        self._work.put(_Request(prompt_ids, params, reply))
        return reply

    def count_tokens(self, messages: Sequence[dict[str, Any]]) -> int:
        from trainer.models import chat_prompt_ids

        return len(chat_prompt_ids(self.tokenizer, messages))

    def load(self, version: str, path: str) -> None:
        """Load an adapter beside the others; returns when it can serve."""
        self._call(lambda: self._load_adapter(version, path))

    def unload(self, version: str) -> None:
        """Drop an adapter once every request queued before this call has finished."""
        if version == BASE_VERSION:
            return
        with self._lock:
            if version == self._live:
                raise BackendError(f"cannot unload the live version {version!r}")
        self._call(lambda: self._unload_adapter(version))

    def set_live(self, version: str) -> None:
        """Switch the default version; in-flight requests finish on the old one."""
        with self._lock:
            self._live = self.resolve(version)

    def close(self) -> None:
        self._work.put(_STOP)
        self._worker.join(timeout=30)

    # -- worker thread ----------------------------------------------------------------

    def _call(self, action: Callable[[], None]) -> None:
        command = _Command(action)
        self._work.put(command)
        command.done.result()

    def _run(self) -> None:
        pending: _Request | _Command | object | None = None
        while True:
            item = pending if pending is not None else self._work.get()
            pending = None
            if item is _STOP:
                return
            if isinstance(item, _Command):
                try:
                    item.action()
                    item.done.set_result(None)
                except BaseException as exc:
                    item.done.set_exception(exc)
                continue
            batch = [item]
            deadline = time.perf_counter() + self.batch_window_s
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._work.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if not isinstance(nxt, _Request):  # commands keep their place in line
                    pending = nxt
                    break
                batch.append(nxt)
            self._generate(batch)

    def _load_adapter(self, version: str, path: str) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=version)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=version)
        self.model.eval()
        with self._lock:
            self._loaded[version] = path
        log.info("loaded adapter %s from %s", version, path)

    def _unload_adapter(self, version: str) -> None:
        with self._lock:
            if version == self._live:
                raise BackendError(f"cannot unload the live version {version!r}")
            self._loaded.pop(version, None)
        peft_config = getattr(self.model, "peft_config", {})
        if version in peft_config:
            self.model.delete_adapter(version)
            if not peft_config:  # peft cannot generate without an adapter: back to the base
                self.model = self.model.unload()
        log.info("unloaded adapter %s", version)

    def _generate(self, batch: list[_Request]) -> None:
        try:
            _generate_batch(self.model, self.tokenizer, batch, self.stop_token_ids)
        except Exception:
            # the traceback goes to the log; the user gets a short message
            log.exception("generation failed for a batch of %d", len(batch))
            for request in batch:
                if request.reply.finish_reason is None:
                    request.reply._fail(BackendError("the model failed to answer; try again"))


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def _generate_batch(model: Any, tokenizer: Any, batch: list[_Request], stop_ids: set[int]) -> None:
    """One `generate` call for every request in `batch`, streaming each row to its reply."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from app.generation import PerRowSampling, PerRowStop, RowStreamer

    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) for r in batch)
    pad = tokenizer.pad_token_id
    # left padding: every row's last prompt token sits at the same position
    input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch])
    attention_mask = torch.tensor(
        [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch]
    )
    kwargs: dict[str, Any] = {}
    if hasattr(model, "peft_config"):
        kwargs["adapter_names"] = [
            PEFT_BASE_ADAPTER if r.reply.version == BASE_VERSION else r.reply.version for r in batch
        ]
    streamer = RowStreamer(
        tokenizer, [r.reply for r in batch], [r.params.max_new_tokens for r in batch], stop_ids
    )
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=True,
            temperature=1.0,  # per-row temperatures are applied by PerRowSampling
            top_k=0,
            top_p=1.0,
            max_new_tokens=max(r.params.max_new_tokens for r in batch),
            logits_processor=LogitsProcessorList([PerRowSampling([r.params for r in batch])]),
            stopping_criteria=StoppingCriteriaList([PerRowStop(streamer)]),
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad,
            streamer=streamer,
            **kwargs,
        )
    streamer.finish_all()
