"""Per-row controls for one batched `generate` call.

`generate` takes one temperature and one length limit for the whole batch; chats
batched together each bring their own. These three small hooks give every row its
own sampling, its own stop, and its own stream of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class PerRowSampling(LogitsProcessor):
    """Divide each row's logits by its temperature (0 → greedy) and apply its top-p."""

    def __init__(self, params: Sequence[Any]) -> None:
        self.temperatures = [float(p.temperature) for p in params]
        self.top_ps = [float(p.top_p) for p in params]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()  # (B, V)
        for row, (t, top_p) in enumerate(zip(self.temperatures, self.top_ps, strict=True)):
            if t <= 0:
                keep = scores[row].argmax()
                scores[row] = float("-inf")
                scores[row, keep] = 0.0
                continue
            scores[row] = scores[row] / t
            if top_p < 1.0:
                scores[row] = _nucleus(scores[row], top_p)
        return scores


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = logits.sort(descending=True)  # (V,)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
    logits = logits.clone()
    logits[order[drop]] = float("-inf")
    return logits


class RowStreamer(BaseStreamer):
    """Routes each generated token to its row's `Reply` as decoded text deltas.

    A row ends at its first stop token, at its own `max_new_tokens`, or when its
    reader cancels; later tokens of that row (padding) are ignored.
    """

    def __init__(
        self, tokenizer: Any, replies: Sequence[Any], limits: Sequence[int], stop_ids: set[int]
    ) -> None:
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.limits = list(limits)
        self.stop_ids = stop_ids
        self.tokens: list[list[int]] = [[] for _ in replies]
        self.sent: list[str] = ["" for _ in replies]
        self.done = [False] * len(replies)
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate first hands over the prompt itself
            self._seen_prompt = True
            return
        for row, token in enumerate(value.reshape(len(self.replies), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            reply = self.replies[row]
            if token in self.stop_ids:
                self._end(row, "stop")
                continue
            self.tokens[row].append(token)
            self._emit(row)
            if len(self.tokens[row]) >= self.limits[row]:
                self._end(row, "length")
            elif reply.cancelled.is_set():
                self._end(row, "cancelled")

    def _emit(self, row: int) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        delta = text[len(self.sent[row]) :]
        if delta:
            self.sent[row] = text
            self.replies[row]._push(delta)

    def _end(self, row: int, reason: str) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text != self.sent[row] and text.startswith(self.sent[row]):
            self.replies[row]._push(text[len(self.sent[row]) :])
        self.done[row] = True
        self.replies[row]._finish(reason, len(self.tokens[row]))

    def end(self) -> None:
        self.finish_all()

    def finish_all(self) -> None:
        for row in range(len(self.replies)):
            if not self.done[row]:
                self._end(row, "length")


class PerRowStop(StoppingCriteria):
    """Tells `generate` which rows the streamer has finished (per-row stopping)."""

    def __init__(self, streamer: RowStreamer) -> None:
        self.streamer = streamer

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs
    ) -> torch.BoolTensor:
        return torch.tensor(self.streamer.done, device=input_ids.device)
