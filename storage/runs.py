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
        with self._write() as db:
            db.execute(
                "UPDATE training_runs SET status = ?, finished_at = ?, n_examples = ?,"
                " metrics_json = ?, error = ? WHERE id = ?",
                (
                    status,
                    utcnow(),
                    n_examples,
                    json.dumps(metrics) if metrics else None,
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
