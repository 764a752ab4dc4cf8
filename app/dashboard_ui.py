"""The Dashboard tab: versions, per-cycle training curves, the current run, the last
errors, and the admin buttons (train now, promote, roll back). It refreshes itself."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import pandas as pd

from app.admin_api import check_admin, promote_version, rollback_version
from app.chat import InputError
from app.swap import VersionSync
from storage import Store
from trainer.schedule import TrainingScheduler

log = logging.getLogger(__name__)

CYCLE_CURVES = (
    "reward_model_accuracy",
    "mean_reward",
    "kl",
    "beta",
    "response_length",
    "no_eos_rate",
)
REFRESH_SECONDS = 10


def versions_table(store: Store) -> pd.DataFrame:
    rows = []
    for v in reversed(store.versions(None)):
        m = v.metrics
        rows.append(
            {
                "version": v.name,
                "kind": v.kind,
                "status": v.status,
                "created": v.created_at[:19],
                "promoted": (v.promoted_at or "")[:19],
                "KL": _fmt(m.get("kl")),
                "reward": _fmt(m.get("mean_reward") or m.get("heldout_accuracy")),
                "gate reasons": "; ".join(m.get("gate_reasons") or []),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "version",
            "kind",
            "status",
            "created",
            "promoted",
            "KL",
            "reward",
            "gate reasons",
        ],
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else ""


def cycle_curves(store: Store) -> pd.DataFrame:
    """One row per (cycle, metric) for the cycles that trained, oldest first."""
    rows = []
    for run in reversed(store.runs("cycle")):
        for name, series in store.run_metrics(run.id).items():
            if name in CYCLE_CURVES and series:
                rows.append({"cycle": run.id, "metric": name, "value": series[-1][1]})
    return pd.DataFrame(rows, columns=["cycle", "metric", "value"])


def current_run(store: Store, scheduler: TrainingScheduler) -> str:
    running = [r for r in store.runs(limit=20) if r.status == "running"]
    if not running:
        last = next(iter(store.runs("cycle", limit=1)), None)
        if last is None:
            return "No training cycle has run yet."
        outcome = last.metrics.get("outcome") or last.status
        return f"Idle. Last cycle #{last.id}: **{outcome}** {last.error or ''}".strip()
    lines = [
        f"- {r.kind} #{r.id} since {r.started_at[11:19]}, stage: **{r.metrics.get('stage', '…')}**"
        for r in running
    ]
    return "Training now:\n" + "\n".join(lines)


def last_errors(store: Store, limit: int = 5) -> str:
    failed = [r for r in store.runs(limit=200) if r.status == "failed"][:limit]
    if not failed:
        return "No failed runs."
    return "\n".join(f"- {r.kind} #{r.id} ({r.started_at[:19]}): {r.error}" for r in failed)


def dashboard_tab(
    store: Store, sync: VersionSync, scheduler: TrainingScheduler, admin_token: str
) -> None:
    progress = gr.Markdown(elem_id="training-progress")
    versions = gr.Dataframe(label="Model versions", interactive=False, wrap=True)
    plots = []
    for row in (CYCLE_CURVES[:3], CYCLE_CURVES[3:]):
        with gr.Row():
            plots += [gr.LinePlot(x="cycle", y="value", label=name, height=220) for name in row]
    errors = gr.Markdown()
    with gr.Accordion("Admin", open=False):
        token = gr.Textbox(label="Admin token", type="password")
        with gr.Row():
            version = gr.Textbox(label="Version to promote", scale=2)
            promote = gr.Button("Promote")
            rollback = gr.Button("Roll back")
            train = gr.Button("Train now")

    def refresh() -> tuple:
        curves = cycle_curves(store)
        per_metric = [curves[curves.metric == name] for name in CYCLE_CURVES]
        return (
            current_run(store, scheduler),
            versions_table(store),
            *per_metric,
            last_errors(store),
        )

    outputs = [progress, versions, *plots, errors]
    gr.Timer(REFRESH_SECONDS).tick(refresh, outputs=outputs, show_progress="hidden")
    train.click(_admin(lambda: _train(scheduler), admin_token), inputs=[token]).then(
        refresh, outputs=outputs
    )
    promote.click(
        _admin(lambda name: f"live: {promote_version(store, sync, name.strip())}", admin_token),
        inputs=[token, version],
    ).then(refresh, outputs=outputs)
    rollback.click(
        _admin(lambda: f"live: {rollback_version(store, sync)}", admin_token), inputs=[token]
    ).then(refresh, outputs=outputs)
    return refresh, outputs


def _train(scheduler: TrainingScheduler) -> str:
    if not scheduler.trigger_now(force=True):
        raise InputError(409, "a training cycle is already running")
    return "training cycle started"


def _admin(action, admin_token: str):
    def handler(token: str, *args: Any) -> None:
        try:
            check_admin(_Bearer(token), admin_token)
            gr.Info(action(*args))
        except InputError as exc:
            gr.Warning(exc.message)

    return handler


class _Bearer:
    """Just enough of a request for `check_admin`: the token typed on the page."""

    def __init__(self, token: str) -> None:
        self.headers = {"authorization": f"Bearer {token}" if token else ""}
