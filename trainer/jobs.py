"""One-off training jobs for the command line: the reward model alone, PPO alone, an
export, and the rank of a launched process.

The web process reaches training through `trainer.cycle` and `trainer.schedule`; the
command line also through this module, and nothing else of `trainer/`. Each job takes
the store and the component configs, and raises `TrainingSkipped` (an outcome: too
little data) or `JobFailed` (a message for the user). Heavy imports happen inside the
jobs, so that `rlhf-chat --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TrainingSkipped

if TYPE_CHECKING:
    from storage import Store
    from trainer.config import ModelConfig
    from trainer.data import DataReport
    from trainer.ppo_config import PPOConfig
    from trainer.reward import RewardOutcome
    from trainer.reward_config import RewardConfig

__all__ = ["JobFailed", "TrainingSkipped"]


class JobFailed(Exception):
    """A job could not run: no base model, no reward model, no prompts, bad data; the
    message says why."""


def train_reward(
    store: Store,
    model: ModelConfig,
    reward: RewardConfig,
    *,
    data_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> RewardOutcome:
    """Train, save and promote a reward model on every judgment in the store."""
    from trainer.errors import TrainingError
    from trainer.models import ModelSourceError, resolve_base_model
    from trainer.reward import train_reward_model

    try:
        base = resolve_base_model(model.source, data_dir)
        return train_reward_model(
            store, reward, data_dir=data_dir, base_model=base, progress=progress
        )
    except TrainingSkipped:
        raise
    except (ModelSourceError, TrainingError) as exc:
        raise JobFailed(str(exc)) from exc


def evaluate_reward(
    store: Store, reward: RewardConfig, *, version: str | None = None, every_pair: bool = False
) -> dict[str, Any]:
    """Accuracy and calibration of the live (or the named) reward model on the held-out
    pairs, or on every pair."""
    from storage import NotFound
    from trainer.data import build_dataset
    from trainer.errors import RewardModelError
    from trainer.reward import evaluate_pairs, latest_reward_model, load_reward_model

    try:
        if version:
            stored = store.get_version(version)
            scorer = load_reward_model(stored.path or "", device=reward.device)
        else:
            scorer = latest_reward_model(store, device=reward.device)
        data = build_dataset(
            store,
            heldout_fraction=reward.heldout_fraction,
            max_user_share=reward.max_user_weight_share,
            seed=reward.seed,
        )
    except (NotFound, RewardModelError) as exc:
        raise JobFailed(str(exc)) from exc
    pairs = data.heldout_pairs + (data.train_pairs if every_pair else [])
    metrics = evaluate_pairs(scorer, pairs)
    return {"version": scorer.name, "split": "all" if every_pair else "heldout", **metrics}


def export_data(
    store: Store, fmt: str, out: str | Path, reward: RewardConfig, *, as_trained: bool = False
) -> tuple[int, DataReport | None]:
    """Write the judgments (or every table) as JSONL; see `trainer.export.export`."""
    from trainer.export import export

    return export(
        store,
        fmt,
        out,
        heldout_fraction=reward.heldout_fraction,
        max_user_share=reward.max_user_weight_share,
        seed=reward.seed,
        as_trained=as_trained,
    )


@dataclass(frozen=True)
class PPOJob:
    """Where a PPO job wrote its adapter, and the live version it started from."""

    adapter_dir: Path
    live: str


def run_ppo_job(
    store: Store,
    model: ModelConfig,
    ppo: PPOConfig,
    reward: RewardConfig,
    *,
    data_dir: Path,
    reward_spec: str | None = None,
    prompts_file: str | None = None,
    out: str | None = None,
    progress: Callable[[Any], None] | None = None,
) -> PPOJob:
    """PPO rounds warm-started from the live adapter, against the live reward model or
    `reward_spec` (MODULE:FUNC); the adapter is written, not published."""
    from trainer.models import ModelSourceError, resolve_base_model
    from trainer.ppo import PPOError, build_policy, read_prompts, run_recorded

    try:
        reward_fn = _ppo_reward_function(reward_spec, reward, store)
        prompts = read_prompts(prompts_file) if prompts_file else store.prompt_contexts()
        if not prompts:
            raise PPOError("no prompts: the store has no conversations yet; pass --prompts-file")
        base = resolve_base_model(model.source, data_dir)
        live = store.live_version("policy")
        policy, tokenizer = build_policy(base, ppo, adapter_dir=live.path or None)
        run_id = store.start_run("ppo").id
        adapter_dir = Path(out or data_dir / "runs" / str(run_id) / "adapter")
        run_recorded(
            store,
            run_id,
            policy,
            tokenizer,
            prompts,
            reward_fn,
            ppo,
            progress=progress,
            output_dir=adapter_dir,
            metrics={"adapter_dir": str(adapter_dir), "live": live.name},
        )
    except (ValueError, PPOError, ModelSourceError) as exc:
        raise JobFailed(str(exc)) from exc
    return PPOJob(adapter_dir, live.name)


def _ppo_reward_function(spec: str | None, reward: RewardConfig, store: Store) -> Any:
    """`MODULE:FUNC` (modules in the working directory import too), else the live reward
    model."""
    from trainer.ppo import PPOError, load_reward_function

    if spec:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return load_reward_function(spec)
    try:
        from trainer.errors import RewardModelError
        from trainer.reward import latest_reward_model
    except ImportError as exc:
        raise PPOError(f"no reward model available ({exc}); pass --reward MODULE:FUNC") from exc
    try:
        return latest_reward_model(store, device=reward.device).score
    except RewardModelError as exc:
        raise PPOError(f"{exc}, or pass --reward MODULE:FUNC") from exc


def launched_rank() -> int:
    """This process's rank under `accelerate launch` / `torchrun` (0 without one)."""
    from trainer.distributed import launched_rank as rank

    return rank()
