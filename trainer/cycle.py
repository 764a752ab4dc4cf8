"""One training cycle: feedback → reward model → PPO → gate → publish → promote.

    run_cycle(store, config, *, force=False) -> CycleResult

1. skip (a recorded outcome, not an error) unless enough judgments arrived since
   the last cycle that trained;
2. refresh the reward model on every kind of feedback (trainer.reward);
3. PPO rounds on prompts from real conversations, warm-started from the live adapter,
   KL anchored to the base model (trainer.ppo);
4. the gate compares candidate and live on held-out prompts (trainer.gate);
5. publish the adapter atomically (trainer.publish): `rejected` with the gate's
   reasons, or `candidate`; with `promotion = "gate"` promote it at once, with
   `"canary"` leave it to `judge_canaries` after arena battles against live;
6. record the run, its stage as it goes, and its metrics for the dashboard.

Until the single promote transaction at the end, nothing the server reads changes: a
crash at any stage leaves the live version serving and no half-written version.

Under a multi-process launch (trainer.distributed) every process runs this function;
only the main one has the store and does the reading, recording, gating and
publishing, and the others follow its decisions while they train beside it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage import Store
from trainer import distributed
from trainer.cycle_config import CycleConfig, TrainingConfig
from trainer.data import DEFAULT_MAX_USER_SHARE, user_weights
from trainer.errors import TrainingSkipped
from trainer.gate import GateResult, PolicySamples, evaluate_gate
from trainer.models import resolve_base_model
from trainer.publish import next_version_name, publish_adapter, remove_unpublished

if TYPE_CHECKING:
    from storage.records import ModelVersion
    from trainer.ppo import PPOResult
    from trainer.reward import RewardOutcome

log = logging.getLogger(__name__)

STAGES = ("data", "reward", "ppo", "gate", "publish", "promote")
StageHook = Callable[[str], None]


@dataclass
class CycleResult:
    status: str  # skipped | published | promoted | rejected
    run_id: int
    reason: str = ""
    version: str | None = None
    gate: GateResult | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"cycle {self.run_id}: {self.status}"
        if self.version:
            text += f" {self.version}"
        if self.reason:
            text += f" ({self.reason})"
        return text


def split_prompts(
    prompts: list[list[dict[str, str]]], n_heldout: int
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Deterministic train/held-out split by a hash of each prompt's text, so the same
    prompt always lands on the same side across cycles."""

    def key(p: list[dict[str, str]]) -> str:
        return hashlib.sha256("\x1e".join(m["content"] for m in p).encode()).hexdigest()

    ordered = sorted(prompts, key=key)
    heldout_n = min(n_heldout, max(1, len(ordered) // 4))
    return ordered[heldout_n:], ordered[:heldout_n]


def run_cycle(
    store: Store | None,
    config: TrainingConfig,
    *,
    force: bool = False,
    stage_hook: StageHook | None = None,
) -> CycleResult:
    """One cycle, recorded as a `cycle` run; see the module docstring. `store` is None
    on the processes that follow the main one under a multi-process launch."""
    run_id, watermark = distributed.on_main(_start_run, store)

    def stage(name: str) -> None:
        if store is not None:
            store.set_run_stage(run_id, name)
        if stage_hook is not None:
            stage_hook(name)
        if config.cycle.stage_pause_seconds:
            time.sleep(config.cycle.stage_pause_seconds)

    try:
        stage("data")
        reason = distributed.on_main(_skip_reason, store, config, watermark, force)
        if reason:
            if store is not None:
                store.finish_run(run_id, "skipped", error=reason)
            return CycleResult("skipped", run_id, reason)
        result = _train_and_ship(store, config, run_id, stage)
    except TrainingSkipped as exc:
        if store is not None:
            store.finish_run(run_id, "skipped", error=str(exc))
        return CycleResult("skipped", run_id, str(exc))
    except Exception as exc:
        if store is not None:
            store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if store is not None:
        store.finish_run(
            run_id,
            "succeeded",
            metrics={**result.metrics, "outcome": result.status, "version": result.version},
        )
    return result


def _start_run(store: Store) -> tuple[int, int]:
    watermark = store.feedback_watermark()
    return store.start_run("cycle", feedback_watermark=watermark).id, watermark


def _skip_reason(store: Store, config: TrainingConfig, watermark: int, force: bool) -> str:
    """Why this cycle does not train ("" when it does); clears a crashed cycle's leftovers.
    Only judgments that add training signal count (not ties, not flags)."""
    new = store.new_signal_judgments()
    if not force and new < config.cycle.min_new_feedback:
        return (
            f"{new} new judgments since the last cycle, {config.cycle.min_new_feedback} "
            "needed (cycle.min_new_feedback)"
        )
    remove_unpublished(store, config.data_dir)
    return ""


def _train_and_ship(
    store: Store | None, config: TrainingConfig, run_id: int, stage: Callable[[str], None]
) -> CycleResult:
    from trainer.evaluation import sample_policy
    from trainer.ppo import build_policy, run_ppo
    from trainer.reward import train_reward_model

    base = distributed.on_main(resolve_base_model, config.model.source, config.data_dir)
    stage("reward")
    reward = train_reward_model(store, config.reward, data_dir=config.data_dir, base_model=base)
    reward_fn = reward.model.score
    prompts = distributed.on_main(_prompts, store, config.reward.max_user_weight_share)
    train_prompts, heldout = split_prompts(prompts, config.cycle.heldout_prompts)
    if not train_prompts:
        raise TrainingSkipped(f"only {len(prompts)} distinct prompts in the store; need more")

    stage("ppo")
    live = distributed.on_main(_live_policy, store)
    # a new seed each cycle: a warm-started policy would otherwise see the same prompt
    # order and sampling noise every cycle
    ppo_config = replace(config.ppo, rounds=config.cycle.ppo_rounds, seed=config.ppo.seed + run_id)
    policy, tokenizer = build_policy(base, ppo_config, adapter_dir=live.path or None)

    def gate_samples() -> PolicySamples:
        # the same seed every cycle and for both policies: answers pair up
        return sample_policy(
            policy,
            tokenizer,
            heldout,
            reward_fn,
            ppo_config,
            samples=config.gate.samples,
            seed=config.ppo.seed + 1,
            max_new_tokens=config.gate.max_new_tokens or None,
        )

    before = distributed.on_main(gate_samples)
    workdir = Path(config.data_dir) / "runs" / str(run_id) / "adapter"
    ppo = run_ppo(
        policy,
        tokenizer,
        train_prompts,
        reward_fn,
        ppo_config,
        store=store,
        output_dir=workdir if store is not None else None,
    )
    after = distributed.on_main(gate_samples)
    return distributed.on_main(
        _gate_and_publish,
        store,
        config,
        run_id,
        stage,
        reward=reward,
        ppo=ppo,
        before=before,
        after=after,
        parent=live.name,
        workdir=workdir,
        prompt_counts=(len(train_prompts), len(heldout)),
    )


def _prompts(
    store: Store, max_user_share: float = DEFAULT_MAX_USER_SHARE, limit: int = 512
) -> list[list[dict[str, str]]]:
    """Up to `limit` recent prompts, each user's count cut to `ceil(weight × n_u)` by the
    reward data's per-user weights (trainer.data.user_weights): the most recent of each
    user's prompts stay, so no user's prompts fill the set while others have some."""
    contexts = store.user_prompt_contexts(limit=4 * limit)
    counts = Counter(user for user, _ in contexts)
    weights = user_weights(counts, max_user_share)
    keep = {u: math.ceil(weights[u] * n - 1e-9) for u, n in counts.items()}
    taken: Counter[int] = Counter()
    prompts = []
    for user, context in contexts:  # most recent first
        if taken[user] < keep[user]:
            taken[user] += 1
            prompts.append(context)
    return prompts[:limit]


def _live_policy(store: Store) -> ModelVersion:
    return store.live_version("policy")


def _gate_and_publish(
    store: Store,
    config: TrainingConfig,
    run_id: int,
    stage: Callable[[str], None],
    *,
    reward: RewardOutcome,
    ppo: PPOResult,
    before: PolicySamples,
    after: PolicySamples,
    parent: str,
    workdir: Path,
    prompt_counts: tuple[int, int],
) -> CycleResult:
    """Gate, log, publish and promote: the main process's part."""
    stage("gate")
    gate = evaluate_gate(
        after,
        before,
        config.gate,
        reward_agreement=reward.metrics.get("heldout_accuracy"),
    )
    metrics = {
        "reward_model": reward.version,
        "reward_model_accuracy": reward.metrics.get("heldout_accuracy"),
        "mean_reward": after.mean_reward,
        "kl": after.kl_to_base,
        "beta": ppo.kl_coef,
        "response_length": sum(after.lengths) / after.n,
        "median_length": after.median_length,
        "no_eos_rate": after.no_eos_rate,
        "train_prompts": prompt_counts[0],
        "heldout_prompts": prompt_counts[1],
        **gate.metrics,
    }
    store.log_metrics(run_id, 0, {k: v for k, v in metrics.items() if _is_number(v)})

    stage("publish")
    name = next_version_name(store)
    status = "candidate" if gate.passed else "rejected"
    version_metrics = {**metrics, "gate_reasons": gate.reasons, "cycle_run": run_id}
    publish_adapter(
        store,
        workdir,
        config.data_dir,
        name,
        parent=parent,
        metrics=version_metrics,
        status=status,
    )
    if not gate.passed:
        return CycleResult("rejected", run_id, "; ".join(gate.reasons), name, gate, metrics)
    if config.cycle.promotion == "canary":
        return CycleResult("published", run_id, "waiting for canary battles", name, gate, metrics)
    stage("promote")
    store.promote(name)
    return CycleResult("promoted", run_id, "", name, gate, metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def judge_canaries(store: Store, config: CycleConfig) -> list[tuple[str, str]]:
    """Promote or retire candidates by their arena record against live.

    A candidate with at least `canary_min_votes` voted battles against the live
    version is promoted when its win rate (ties half; both-bad votes left out) reaches
    `canary_win_rate`, and retired otherwise. Returns
    [(version, "promoted" | "retired")].
    """
    live = store.live_version("policy")
    decisions = []
    for candidate in [v for v in store.versions("policy") if v.status == "candidate"]:
        wins, total = head_to_head(store, candidate.name, live.name)
        if total < config.canary_min_votes:
            continue
        rate = wins / total
        if rate >= config.canary_win_rate:
            store.promote(candidate.name)
            decisions.append((candidate.name, "promoted"))
            live = store.live_version("policy")
        else:
            store.set_version_status(
                candidate.name, "retired", metrics={"canary_win_rate": rate, "canary_votes": total}
            )
            decisions.append((candidate.name, "retired"))
    return decisions


def head_to_head(
    store: Store,
    version: str,
    opponent: str,
    *,
    max_user_share: float = DEFAULT_MAX_USER_SHARE,
) -> tuple[float, int]:
    """(wins of `version` over `opponent` with ties counting half, battles). A both-bad
    vote says neither is better: it counts for neither side and is left out; so are
    flagged users' votes.

    Votes are weighted per user as the reward data is (trainer.data.user_weights), and
    `wins` is the weighted win rate times the number of battles: one voter alone counts
    in full, and one voter among many cannot carry a canary by voting often.
    """
    scores: list[tuple[int, float]] = []
    for battle in store.battle_votes():
        sides = (battle.version_a, battle.version_b)
        if set(sides) != {version, opponent} or battle.outcome == "both_bad":
            continue
        if battle.user_flagged:
            continue
        if battle.outcome == "tie":
            score = 0.5
        else:
            score = float(sides[0 if battle.outcome == "a" else 1] == version)
        scores.append((battle.user_id, score))
    if not scores:
        return 0.0, 0
    weights = user_weights(Counter(user for user, _ in scores), max_user_share)
    rate = sum(weights[u] * s for u, s in scores) / sum(weights[u] for u, _ in scores)
    return rate * len(scores), len(scores)
