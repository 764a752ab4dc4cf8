"""Typed records returned by the store: one frozen dataclass per table row."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Self


class _Row:
    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass(frozen=True)
class User(_Row):
    id: int
    kind: str  # anon | password | oauth
    name: str | None
    created_at: str
    is_flagged: int = 0
    token_version: int = 0
    credential_fingerprint: str | None = None


@dataclass(frozen=True)
class Conversation(_Row):
    id: int
    user_id: int
    created_at: str
    title: str | None


@dataclass(frozen=True)
class Message(_Row):
    id: int
    conversation_id: int
    parent_id: int | None
    role: str  # system | user | assistant
    content: str
    model_version_id: int | None
    sampling_json: str | None
    created_at: str
    latency_ms: int | None
    n_tokens: int | None

    @property
    def sampling(self) -> dict[str, Any]:
        return json.loads(self.sampling_json) if self.sampling_json else {}


@dataclass(frozen=True)
class Feedback(_Row):
    id: int
    message_id: int
    user_id: int
    kind: str  # thumb | edit | retry | flag
    value: int | None
    text: str | None
    created_at: str


@dataclass(frozen=True)
class Battle(_Row):
    id: int
    user_id: int
    prompt_message_id: int
    message_a_id: int
    message_b_id: int
    version_a_id: int
    version_b_id: int
    pairing: str
    outcome: str | None  # a | b | tie | both_bad | None until voted
    created_at: str
    voted_at: str | None


@dataclass(frozen=True)
class ModelVersion(_Row):
    id: int
    kind: str  # policy | reward
    name: str
    parent_id: int | None
    path: str | None
    sha256: str | None
    status: str  # candidate | live | retired | rejected | rolled_back
    created_at: str
    promoted_at: str | None
    metrics_json: str | None

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_json) if self.metrics_json else {}


@dataclass(frozen=True)
class TrainingRun(_Row):
    id: int
    kind: str  # cycle | reward | ppo
    status: str  # running | succeeded | failed | skipped
    started_at: str
    finished_at: str | None
    feedback_watermark: int | None
    n_examples: int | None
    metrics_json: str | None
    error: str | None

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_json) if self.metrics_json else {}
