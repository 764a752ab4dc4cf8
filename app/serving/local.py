"""`LocalBackend`: transformers + peft in this process.

One worker thread owns the model: it batches the chats that are waiting (one `generate`
call, each row with its own adapter through peft's `adapter_names`, its own temperature
and length limit), and it applies adapter loads, unloads and live switches *between*
batches, in the order they were asked. So no request ever sees a half-loaded adapter, a
request resolved to a version finishes on that version, and nothing calls `set_adapter`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from app.serving.backend import (
    BASE_VERSION,
    DEFAULT_PARAMS,
    BackendError,
    Busy,
    ChatBackend,
    Reply,
    SamplingParams,
)

log = logging.getLogger(__name__)

PEFT_BASE_ADAPTER = "__base__"  # peft's name for "no adapter" inside adapter_names
_STOP = object()  # tells the generation worker to exit


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

    def stream(self, messages, *, version=None, params=DEFAULT_PARAMS) -> Reply:
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

    from app.serving.generation import PerRowSampling, PerRowStop, RowStreamer

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
