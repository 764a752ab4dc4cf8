"""The measured half of the loop benchmark: every stored policy version against base on
the held-out prompts, and every cycle's reward model against the oracle."""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from bench.measure import (
    Answers,
    eval_config,
    judge,
    reward_model_scores,
    sample_answers,
    usable_prompts,
)
from bench.winrate import (
    bootstrap_ci,
    decisive_win_rate,
    median_ratio,
    outcomes,
    sign_agreement,
    tie_share,
    win_rate,
)


def evaluate_versions(
    data_dir: Path,
    oracle: Any,
    prompts: list[str],
    cycles: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The report: `versions` and `cycles` (each cycle row gains the reward model's
    agreement with the oracle) and the settings they were measured with."""
    from app.config import load_config
    from storage import Store
    from trainer.models import resolve_base_model

    config = load_config(args.config, overrides={"storage.data_dir": data_dir})
    base = resolve_base_model(config.model.source, data_dir)
    sampling = eval_config(
        config.ppo, temperature=config.serving.temperature, max_new_tokens=args.max_new_tokens
    )
    prompts = usable_prompts(base, prompts, sampling)
    store = Store(data_dir / "chat.db")
    try:
        versions = store.versions("policy")
        reward_paths = {v.name: v.path for v in store.versions("reward") if v.path}
    finally:
        store.close()

    def answers_of(name: str, adapter: str | None, seed: int) -> Answers:
        print(f"measuring {name} on {len(prompts)} held-out prompts", flush=True)
        return sample_answers(
            base, name, adapter, prompts, sampling, samples=args.samples, seed=seed
        )

    reference = answers_of("base (reference)", None, args.seed)
    reference_scores = judge(oracle, reference)
    rows, contenders = [], []
    for version in versions:
        answers = answers_of(version.name, version.path or None, args.seed + 1)
        scores = judge(oracle, answers)
        rows.append(
            version_row(
                version.name, version.status, answers, scores, reference, reference_scores, args
            )
        )
        contenders.append((answers, scores))
    for cycle in cycles:
        path = reward_paths.get(cycle.get("reward_model") or "")
        cycle["reward_model_oracle_agreement"] = (
            reward_agreement(path, reference, reference_scores, contenders) if path else None
        )
    settings = {
        "oracle": args.oracle,
        "cycles": args.cycles,
        "votes_per_cycle": args.votes_per_cycle,
        "chats_per_cycle": (
            args.votes_per_cycle // 4 if args.chats_per_cycle is None else args.chats_per_cycle
        ),
        "users": args.users,
        "noise": args.noise,
        "seed": args.seed,
        "model_source": config.model.source,
        "heldout_prompts": len(prompts),
        "samples": args.samples,
        "temperature": sampling.temperature,
        "max_new_tokens": sampling.max_new_tokens,
        "reference_mean_oracle_score": statistics.fmean(reference_scores),
        "reference_median_length": statistics.median(reference.lengths),
        "reference_no_eos_rate": 1 - statistics.fmean(reference.has_eos),
        "config_file": args.config,
        "environment": environment_settings(dict(os.environ)),
    }
    return {"versions": rows, "cycles": cycles, "settings": settings}


def version_row(
    name: str,
    status: str,
    answers: Answers,
    scores: list[float],
    reference: Answers,
    reference_scores: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One version's row of the report (DESIGN.md's keys first).

    Both intervals resample whole prompts (every sample of a prompt together). Lengths
    and the no-EOS rate are of the answers measured here, generated at the benchmark's
    serving length (`--max-new-tokens`, what the simulated users' chats ask for).
    """
    groups = answers.by_prompt(outcomes(scores, reference_scores))
    low, high = bootstrap_ci(groups, n_resamples=args.bootstrap, seed=args.seed)
    decisive = decisive_win_rate(groups)
    d_low, d_high = bootstrap_ci(groups, n_resamples=args.bootstrap, seed=args.seed, decisive=True)
    return {
        "name": name,
        "oracle_win_rate_vs_base": win_rate(groups),
        "ci95": [low, high],
        "kl_to_base": statistics.fmean(answers.kl),
        "median_length_ratio": median_ratio(answers.lengths, reference.lengths),
        "status": status,
        "tie_share": tie_share(groups),
        "decisive_win_rate": decisive,
        "decisive_ci95": None if decisive is None else [d_low, d_high],
        "answer_pairs": len(scores),
        "median_length": statistics.median(answers.lengths),
        "no_eos_rate": 1 - statistics.fmean(answers.has_eos),
        "mean_oracle_score": statistics.fmean(scores),
    }


def reward_agreement(
    path: str,
    reference: Answers,
    reference_scores: list[float],
    contenders: list[tuple[Answers, list[float]]],
) -> float | None:
    """How often the reward model at `path` orders (contender answer, reference answer)
    pairs to the same prompt as the oracle does, over every version's answers; pairs the
    oracle scores equal are left out."""
    reward_reference, *rewards = reward_model_scores(path, [reference, *(a for a, _ in contenders)])
    predicted, truth = [], []
    for (_, scores), reward in zip(contenders, rewards, strict=True):
        predicted += [r - q for r, q in zip(reward, reward_reference, strict=True)]
        truth += [s - q for s, q in zip(scores, reference_scores, strict=True)]
    return sign_agreement(predicted, truth)


SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD")


def environment_settings(environ: dict[str, str]) -> dict[str, str]:
    """The `RLHF_CHAT_*` settings the caller's environment gave the server and the
    measurement (they override the config file and the defaults); secrets hidden."""
    return {
        k: "(hidden)" if any(w in k for w in SECRET_WORDS) else v
        for k, v in sorted(environ.items())
        if k.startswith("RLHF_CHAT_")
    }
