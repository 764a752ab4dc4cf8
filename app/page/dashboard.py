"""The Dashboard tab: versions, per-cycle training curves and the current run for
everyone; for admins only, the last errors, judgments per user, the users with flag,
unflag and revoke, and the buttons train now, promote, roll back. It refreshes itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from app.admin import (
    USER_COLUMNS,
    check_admin,
    promote_version,
    revoke,
    rollback_version,
    set_flagged,
    train_now,
    users_report,
)
from app.errors import InputError
from app.leaderboard import store_leaderboard
from app.page.leaderboard import leaderboard_table
from app.serving.swap import VersionSync
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


USER_SHARE_COLUMNS = ["user", "judgments", "share", "weight in last training", "weighted share"]


def user_shares(store: Store, limit: int = 20) -> pd.DataFrame:
    """Who the judgments come from: each user's count and share of all judgments, and
    in the last reward model's training set the weight each of the user's judgments
    got and the user's share of the total weight (`reward.max_user_weight_share`).
    One user holding most of the votes shows here first."""
    everyone = store.judgments_per_user()
    total = sum(u.total for u in everyone)
    last = _last_training_users(store)
    rows = []
    for u in everyone[:limit]:
        entry = last.get(str(u.user_id), {})
        weight, share = entry.get("weight"), entry.get("share")
        rows.append(
            {
                "user": f"#{u.user_id} {u.name or u.kind}" + (" (flagged)" if u.is_flagged else ""),
                "judgments": u.total,
                "share": f"{u.total / total:.0%}",
                "weight in last training": "" if weight is None else f"{weight:.3g}",
                "weighted share": "" if share is None else f"{share:.0%}",
            }
        )
    return pd.DataFrame(rows, columns=USER_SHARE_COLUMNS)


def _last_training_users(store: Store) -> dict[str, dict[str, float]]:
    for run in store.runs("reward", limit=20):
        users = (run.metrics.get("data") or {}).get("users")
        if users is not None:
            return users
    return {}


def current_run(store: Store, scheduler: TrainingScheduler, *, with_errors: bool = True) -> str:
    running = [r for r in store.runs(limit=20) if r.status == "running"]
    if not running:
        last = next(iter(store.runs("cycle", limit=1)), None)
        if last is None:
            return "No training cycle has run yet."
        outcome = last.metrics.get("outcome") or last.status
        error = (last.error or "") if with_errors else ""
        return f"Idle. Last cycle #{last.id}: **{outcome}** {error}".strip()
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
    store: Store,
    sync: VersionSync,
    scheduler: TrainingScheduler,
    admin_token: str,
    *,
    admin_user: Callable[[str], bool] | None = None,
    user_token: gr.BrowserState | None = None,
) -> tuple:
    """The tab's components and its refresh (inputs, outputs). Everyone sees the versions
    and the training curves; the per-user table, training errors, users and admin buttons
    only an admin does: the typed admin token or, with it left empty, the session of a
    signed-in admin user (`admin_user` checks `user_token`). Each handler is also a
    public API route, so each checks the credential itself."""
    progress = gr.Markdown(elem_id="training-progress")
    versions = gr.Dataframe(label="Model versions", interactive=False, wrap=True)
    plots = []
    for row in (CYCLE_CURVES[:3], CYCLE_CURVES[3:]):
        with gr.Row():
            plots += [gr.LinePlot(x="cycle", y="value", label=name, height=220) for name in row]
    with gr.Accordion("Admin", open=False):
        token = gr.Textbox(
            label="Admin token",
            type="password",
            info="Leave empty if you signed in as an admin user.",
        )
        session = user_token if user_token is not None else gr.State(None)
        with gr.Column(visible=False) as admin_area:
            errors = gr.Markdown()
            shares = gr.Dataframe(
                label="Judgments per user (the per-user cap keeps any one user's share of "
                "training small)",
                interactive=False,
                elem_id="user-shares",
            )
            with gr.Row():
                version = gr.Textbox(label="Version to promote", scale=2)
                promote = gr.Button("Promote")
                rollback = gr.Button("Roll back")
                train = gr.Button("Train now")
            users = gr.Dataframe(label="Users", interactive=False, elem_id="users")
            with gr.Row():
                user_id = gr.Textbox(label="User id", scale=2)
                flag = gr.Button("Flag")
                unflag = gr.Button("Unflag")
                revoke_button = gr.Button("Revoke tokens")
            include_flagged = gr.Checkbox(
                label="Leaderboard with flagged users' votes (they are left out everywhere else)"
            )
            flagged_board = gr.Dataframe(
                label="Leaderboard, flagged users' votes included",
                interactive=False,
                visible=False,
            )

    def is_admin(typed: str | None, session_token: str | None) -> bool:
        try:
            check_admin(_credential(typed, session_token), admin_token, admin_user)
        except InputError:
            return False
        return True

    def refresh(typed: str | None = None, session_token: str | None = None, flagged=False):
        admin = is_admin(typed, session_token)
        curves = cycle_curves(store)
        per_metric = [curves[curves.metric == name] for name in CYCLE_CURVES]
        if not admin:  # errors and who voted how much are for admins only
            return (
                current_run(store, scheduler, with_errors=False),
                versions_table(store),
                *per_metric,
                "",
                pd.DataFrame(columns=USER_SHARE_COLUMNS),
                gr.update(visible=False),
                pd.DataFrame(),
                gr.update(value=pd.DataFrame(), visible=False),
            )
        return (
            current_run(store, scheduler),
            versions_table(store),
            *per_metric,
            last_errors(store),
            user_shares(store),
            gr.update(visible=True),
            pd.DataFrame(users_report(store), columns=USER_COLUMNS),
            gr.update(
                value=_flagged_board(store) if flagged is True else None, visible=flagged is True
            ),
        )

    inputs = [token, session, include_flagged]
    outputs = [progress, versions, *plots, errors, shares, admin_area, users, flagged_board]
    # one public route, `/dashboard`; the same refresh elsewhere is private (still checked)
    gr.Timer(REFRESH_SECONDS).tick(
        refresh, inputs=inputs, outputs=outputs, show_progress="hidden", api_name="dashboard"
    )
    gr.on(
        [token.submit, include_flagged.change],
        refresh,
        inputs=inputs,
        outputs=outputs,
        api_visibility="private",
    )

    def admin(action: Callable[..., str]) -> Callable[..., None]:
        return _admin(action, admin_token, admin_user)

    for button, name, action, extra in (
        (train, "train", lambda: _train(scheduler), []),
        (
            promote,
            "promote",
            lambda v: f"live: {promote_version(store, sync, v.strip())}",
            [version],
        ),
        (rollback, "rollback", lambda: f"live: {rollback_version(store, sync)}", []),
        (flag, "flag", lambda uid: _flagged_text(set_flagged(store, uid, True)), [user_id]),
        (unflag, "unflag", lambda uid: _flagged_text(set_flagged(store, uid, False)), [user_id]),
        (revoke_button, "revoke", lambda uid: _revoked_text(revoke(store, uid)), [user_id]),
    ):
        button.click(admin(action), inputs=[token, session, *extra], api_name=f"admin_{name}").then(
            refresh, inputs=inputs, outputs=outputs, api_visibility="private"
        )
    return refresh, inputs, outputs


def _credential(typed: str | None, session_token: str | None) -> str | None:
    """A typed token wins; an empty box falls back to the signed-in user's session."""
    typed = typed.strip() if isinstance(typed, str) else ""
    return typed or (session_token if isinstance(session_token, str) else None)


def _flagged_board(store: Store) -> pd.DataFrame:
    statuses = {v.name: v.status for v in store.versions("policy")}
    return leaderboard_table(store_leaderboard(store, include_flagged=True), statuses)


def _flagged_text(done: dict[str, Any]) -> str:
    return f"user {done['user_id']} {'flagged' if done['flagged'] else 'unflagged'}"


def _revoked_text(done: dict[str, Any]) -> str:
    return f"user {done['user_id']}: every token issued so far is refused"


def _train(scheduler: TrainingScheduler) -> str:
    train_now(scheduler)
    return "training cycle started"


def _admin(
    action: Callable[..., str],
    admin_token: str,
    admin_user: Callable[[str], bool] | None = None,
) -> Callable[..., None]:
    def handler(token: str | None, session_token: str | None, *args: Any) -> None:
        try:
            check_admin(_credential(token, session_token), admin_token, admin_user)
            gr.Info(action(*args))
        except InputError as exc:
            gr.Warning(exc.message)

    return handler
