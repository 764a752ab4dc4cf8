"""Win rate of one model version against another, judged by an oracle, with a bootstrap
95% interval. Pure functions over scores; the loop benchmark feeds them.

An outcome is 1 when the version's answer scores higher than the other's answer to
the same prompt, 0.5 when they score the same, 0 when lower. Outcomes are grouped by
prompt (several samples per prompt form one group), and the intervals resample whole
prompts: answers to one prompt are not independent of each other.

Next to the win rate (ties half), the tie share and the win rate over decisive pairs
(ties left out) say how much of a result is the oracle having no opinion: an oracle
that ties most pairs pulls every win rate towards 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def outcomes(scores: Sequence[float], reference: Sequence[float]) -> list[float]:
    """Per pair: 1 when `scores[i]` beats `reference[i]`, 0.5 when equal, 0 when below."""
    if len(scores) != len(reference):
        raise ValueError(f"{len(scores)} scores against {len(reference)} reference scores")
    return [
        1.0 if s > r else 0.5 if s == r else 0.0 for s, r in zip(scores, reference, strict=True)
    ]


def win_rate(groups: Sequence[Sequence[float]]) -> float:
    """The share of all outcomes won, ties half (every outcome weighs the same)."""
    flat = [o for group in groups for o in group]
    if not flat:
        raise ValueError("no outcomes")
    return float(np.mean(flat))


def tie_share(groups: Sequence[Sequence[float]]) -> float:
    """The share of all outcomes that are ties (0.5)."""
    flat = [o for group in groups for o in group]
    if not flat:
        raise ValueError("no outcomes")
    return sum(o == 0.5 for o in flat) / len(flat)


def decisive_win_rate(groups: Sequence[Sequence[float]]) -> float | None:
    """Wins over wins plus losses, ties left out; None when every outcome is a tie."""
    wins = sum(o == 1.0 for group in groups for o in group)
    losses = sum(o == 0.0 for group in groups for o in group)
    return wins / (wins + losses) if wins + losses else None


def bootstrap_ci(
    groups: Sequence[Sequence[float]],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    decisive: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `win_rate` (or, with `decisive`, of
    `decisive_win_rate`), resampling groups (prompts) with replacement; the same seed
    gives the same interval. With `decisive`, resamples without a decisive outcome are
    left out, and (nan, nan) comes back when no group has one."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every group needs at least one outcome")
    if not 0 < level < 1:
        raise ValueError("level must be within (0, 1)")
    if decisive:
        sums = np.array([float(sum(o == 1.0 for o in g)) for g in groups])  # (G,) wins
        counts = np.array([float(sum(o != 0.5 for o in g)) for g in groups])  # (G,) decided
    else:
        sums = np.array([float(np.sum(g)) for g in groups])  # (G,)
        counts = np.array([len(g) for g in groups], dtype=float)  # (G,)
    if not counts.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(n_resamples, len(groups)))  # (n_resamples, G)
    totals = counts[picks].sum(axis=1)  # (n_resamples,)
    kept = totals > 0
    rates = sums[picks].sum(axis=1)[kept] / totals[kept]  # (kept,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return float(low), float(high)


def median_ratio(lengths: Sequence[float], reference: Sequence[float]) -> float:
    """Median of `lengths` over the median of `reference` (1.0: no drift)."""
    if not len(lengths) or not len(reference):
        raise ValueError("no lengths")
    ref = float(np.median(reference))
    return float(np.median(lengths)) / ref if ref else float("inf")


def sign_agreement(predicted: Sequence[float], truth: Sequence[float]) -> float | None:
    """Share of pairs whose `predicted` difference has the sign of the `truth` difference,
    among the pairs where `truth` is not zero; None when there are none. A predicted
    difference of zero counts half."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} truths")
    decided = [(p, t) for p, t in zip(predicted, truth, strict=True) if t != 0]
    if not decided:
        return None
    return float(np.mean([1.0 if p * t > 0 else 0.5 if p == 0 else 0.0 for p, t in decided]))
