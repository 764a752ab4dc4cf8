"""Model versions and training runs: the trainer's side of the store.

A mixin of `Store` (see store.py for connections and the write transaction), kept
in its own file because it is its own concept: what exists to be served, which one
is live, and what each training run did.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from storage.errors import InvalidValue, NotFound
from storage.records import ModelVersion, TrainingRun

if TYPE_CHECKING:
    from sqlite_utils import Database

BASE_VERSION = "base"
VERSION_KINDS = ("policy", "reward")
VERSION_STATUSES = ("candidate", "live", "retired", "rejected", "rolled_back")
RUN_KINDS = ("cycle", "reward", "ppo")
RUN_STATUSES = ("running", "succeeded", "failed", "skipped")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class VersionsAndRuns:
    # provided by Store
    _write: Any
    _one: Any
    _insert: Any
    db: Database

    def _ensure_base_version(self) -> None:
        """Register the base model as version `base`, live, on a new database."""
        with self._write() as db:
            exists = list(db.query("SELECT 1 FROM model_versions WHERE name = ?", (BASE_VERSION,)))
            if not exists:
                now = utcnow()
                self._insert(
                    db,
                    "model_versions",
                    {
                        "kind": "policy",
                        "name": BASE_VERSION,
                        "status": "live",
                        "created_at": now,
                        "promoted_at": now,
                    },
                )

    def get_version(self, name: str) -> ModelVersion:
        row = self._one("SELECT * FROM model_versions WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no model version named {name!r}")
        return ModelVersion.from_row(row)

    def get_version_by_id(self, version_id: int) -> ModelVersion:
        row = self._one("SELECT * FROM model_versions WHERE id = ?", (version_id,))
        if row is None:
            raise NotFound(f"no model version {version_id}")
        return ModelVersion.from_row(row)

    def live_version(self, kind: str = "policy") -> ModelVersion:
        row = self._one("SELECT * FROM model_versions WHERE kind = ? AND status = 'live'", (kind,))
        if row is None:
            raise NotFound(f"no live {kind} version")
        return ModelVersion.from_row(row)

    def versions(self, kind: str | None = "policy") -> list[ModelVersion]:
        if kind is None:
            rows = self.db.query("SELECT * FROM model_versions ORDER BY id")
        else:
            rows = self.db.query("SELECT * FROM model_versions WHERE kind = ? ORDER BY id", (kind,))
        return [ModelVersion.from_row(r) for r in rows]

    def add_version(
        self,
        kind: str,
        name: str,
        *,
        path: str | None = None,
        sha256: str | None = None,
        parent: str | None = None,
        status: str = "candidate",
        metrics: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Register a published artifact (its files must already be in place)."""
        if kind not in VERSION_KINDS:
            raise InvalidValue(f"version kind must be one of {VERSION_KINDS}, not {kind!r}")
        if status not in VERSION_STATUSES or status == "live":
            raise InvalidValue(
                f"a new version starts as candidate, rejected or retired, not {status!r}"
            )
        parent_id = self.get_version(parent).id if parent else None
        with self._write() as db:
            if list(db.query("SELECT 1 FROM model_versions WHERE name = ?", (name,))):
                raise InvalidValue(f"a model version named {name!r} already exists")
            version_id = self._insert(
                db,
                "model_versions",
                {
                    "kind": kind,
                    "name": name,
                    "parent_id": parent_id,
                    "path": path,
                    "sha256": sha256,
                    "status": status,
                    "created_at": utcnow(),
                    "metrics_json": json.dumps(metrics) if metrics else None,
                },
            )
        return self.get_version_by_id(version_id)

    def set_version_status(
        self, name: str, status: str, *, metrics: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Change a non-live status (candidate → rejected, retired…); `promote` makes one live."""
        if status not in VERSION_STATUSES or status == "live":
            raise InvalidValue(
                f"use promote() to make a version live; {status!r} is not a status here"
            )
        version = self.get_version(name)
        merged = {**version.metrics, **(metrics or {})}
        with self._write() as db:
            db.execute(
                "UPDATE model_versions SET status = ?, metrics_json = ? WHERE id = ?",
                (status, json.dumps(merged) if merged else None, version.id),
            )
        return self.get_version(name)

    def promote(self, name: str, *, previous_status: str = "retired") -> ModelVersion:
        """Make `name` the live version of its kind, in one transaction."""
        version = self.get_version(name)
        with self._write() as db:
            db.execute(
                "UPDATE model_versions SET status = ? WHERE kind = ? AND status = 'live'",
                (previous_status, version.kind),
            )
            db.execute(
                "UPDATE model_versions SET status = 'live', promoted_at = ? WHERE id = ?",
                (utcnow(), version.id),
            )
        return self.get_version(name)

    def rollback(self, kind: str = "policy") -> ModelVersion:
        """Make the previous live version live again; the current one becomes
        `rolled_back`. One transaction."""
        previous = self.previous_live_version(kind)  # type: ignore[attr-defined]
        if previous is None:
            raise NotFound(f"no earlier {kind} version to roll back to")
        return self.promote(previous.name, previous_status="rolled_back")

    def feedback_watermark(self) -> int:
        """A number that grows with every new judgment (thumbs, edits, retries, flags
        and battle votes): the sum of the highest feedback id and the number of voted
        battles. A cycle trains only when it has moved far enough."""
        row = self._one(
            "SELECT (SELECT coalesce(max(id), 0) FROM feedback)"
            " + (SELECT count(*) FROM battles WHERE outcome IS NOT NULL) AS mark"
        )
        return int(row["mark"]) if row else 0

    def last_cycle_watermark(self) -> int:
        """The watermark of the last cycle that trained (succeeded or was rejected by the gate)."""
        row = self._one(
            "SELECT feedback_watermark FROM training_runs WHERE kind = 'cycle'"
            " AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
        )
        return int(row["feedback_watermark"] or 0) if row else 0

    def set_run_stage(self, run_id: int, stage: str) -> None:
        """Record which stage a running run has reached (what the dashboard shows)."""
        run = self.get_run(run_id)
        with self._write() as db:
            db.execute(
                "UPDATE training_runs SET metrics_json = ? WHERE id = ?",
                (json.dumps({**run.metrics, "stage": stage}), run_id),
            )

    def last_run_id(self) -> int:
        row = self._one("SELECT coalesce(max(id), 0) AS id FROM training_runs")
        return int(row["id"]) if row else 0

    def fail_abandoned_runs(self, error: str, *, after_id: int = 0) -> int:
        """Mark runs with id > `after_id` still `running` as failed (their process
        died); returns how many."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE training_runs SET status = 'failed', finished_at = ?, error = ?"
                " WHERE status = 'running' AND id > ?",
                (utcnow(), error, after_id),
            )
        return cursor.rowcount

    # -- training runs -------------------------------------------------------------

    def start_run(self, kind: str, *, feedback_watermark: int | None = None) -> TrainingRun:
        if kind not in RUN_KINDS:
            raise InvalidValue(f"run kind must be one of {RUN_KINDS}, not {kind!r}")
        with self._write() as db:
            run_id = self._insert(
                db,
                "training_runs",
                {
                    "kind": kind,
                    "status": "running",
                    "started_at": utcnow(),
                    "feedback_watermark": feedback_watermark,
                },
            )
        return self.get_run(run_id)

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        n_examples: int | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> TrainingRun:
        if status not in RUN_STATUSES or status == "running":
            raise InvalidValue(f"a run finishes as succeeded, failed or skipped, not {status!r}")
        merged = {**self.get_run(run_id).metrics, **(metrics or {})}  # keeps the last stage
        with self._write() as db:
            db.execute(
                "UPDATE training_runs SET status = ?, finished_at = ?, n_examples = ?,"
                " metrics_json = ?, error = ? WHERE id = ?",
                (
                    status,
                    utcnow(),
                    n_examples,
                    json.dumps(merged) if merged else None,
                    error,
                    run_id,
                ),
            )
        return self.get_run(run_id)

    def get_run(self, run_id: int) -> TrainingRun:
        row = self._one("SELECT * FROM training_runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFound(f"no training run {run_id}")
        return TrainingRun.from_row(row)

    def runs(self, kind: str | None = None, *, limit: int = 100) -> list[TrainingRun]:
        """Most recent first."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self.db.query(
            f"SELECT * FROM training_runs {where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )
        return [TrainingRun.from_row(r) for r in rows]

    def log_metrics(self, run_id: int, step: int, values: dict[str, float]) -> None:
        """Append one step's metrics (what the dashboard plots)."""
        with self._write() as db:
            db.conn.executemany(
                "INSERT OR REPLACE INTO run_metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)",
                [(run_id, step, name, float(value)) for name, value in values.items()],
            )

    def run_metrics(self, run_id: int) -> dict[str, list[tuple[int, float]]]:
        """{metric name: [(step, value), ...]} for one run."""
        series: dict[str, list[tuple[int, float]]] = {}
        for row in self.db.query(
            "SELECT step, name, value FROM run_metrics WHERE run_id = ? ORDER BY step", (run_id,)
        ):
            series.setdefault(row["name"], []).append((row["step"], row["value"]))
        return series

    # -- prompts for policy training ---------------------------------------------------

    def prompt_contexts(
        self, limit: int = 256, *, max_messages: int = 16
    ) -> list[list[dict[str, str]]]:
        """Prompts for PPO from real conversations, most recent first.

        Each is a user message with the turns before it (followed through `parent_id`
        back to the conversation's start, at most `max_messages` in all), as
        `{"role", "content"}` dicts ending with that user turn. Conversations of users
        flagged as abusive are left out, and a context seen twice is returned once, so
        up to `limit` come back.
        """
        return [c for _, c in self.user_prompt_contexts(limit, max_messages=max_messages)]

    def user_prompt_contexts(
        self, limit: int = 256, *, max_messages: int = 16
    ) -> list[tuple[int, list[dict[str, str]]]]:
        """`prompt_contexts` with the id of the user whose conversation each came from
        (the most recent one's, for a context seen twice)."""
        rows = self.db.query(
            """
            WITH RECURSIVE recent(id, user_id) AS (
                SELECT m.id, c.user_id FROM messages m
                JOIN conversations c ON c.id = m.conversation_id
                JOIN users u ON u.id = c.user_id
                WHERE m.role = 'user' AND u.is_flagged = 0 AND trim(m.content) != ''
                ORDER BY m.id DESC LIMIT ?
            ),
            chain(start_id, user_id, id, parent_id, role, content, depth) AS (
                SELECT m.id, r.user_id, m.id, m.parent_id, m.role, m.content, 0
                FROM messages m JOIN recent r ON r.id = m.id
                UNION ALL
                SELECT chain.start_id, chain.user_id, p.id, p.parent_id, p.role, p.content,
                    chain.depth + 1
                FROM messages p JOIN chain ON p.id = chain.parent_id
                WHERE chain.depth + 1 < ?
            )
            SELECT start_id, user_id, role, content FROM chain
            ORDER BY start_id DESC, depth DESC
            """,
            (limit, max_messages),
        )
        contexts: dict[int, tuple[int, list[dict[str, str]]]] = {}
        for row in rows:
            contexts.setdefault(row["start_id"], (row["user_id"], []))[1].append(
                {"role": row["role"], "content": row["content"]}
            )
        unique: dict[tuple[tuple[str, str], ...], tuple[int, list[dict[str, str]]]] = {}
        for user_id, messages in contexts.values():
            key = tuple((m["role"], m["content"]) for m in messages)
            unique.setdefault(key, (user_id, messages))
        return list(unique.values())
