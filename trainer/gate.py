"""The gate: a candidate policy ships only if a statistical test says it is not worse
than the live one, and nothing shows reward hacking (Gao et al. 2022: proxy reward keeps
rising while true reward falls past some KL — so bound KL, length drift and missing
EOS, and check the reward model still agrees with held-out human votes).

    evaluate_gate(candidate, live, config, reward_agreement=None) -> GateResult

Candidate and live answer the same held-out prompts with the same sampling seeds
(trainer.evaluation), so their answers pair up and most of the sampling noise cancels in
the differences. The decision reads:
- non-inferiority: the paired-bootstrap lower bound (at `confidence`, one-sided) of the
  mean reward gain must be above `-non_inferiority_margin`. The bootstrap resamples
  held-out prompts, not answers, since answers to one prompt are not independent;
- a required gain: the mean reward gain must reach `min_reward_gain`;
- no-EOS: the rise in answers that never end must not be significant by a one-sided
  two-proportion z-test at `confidence` (and must exceed `max_no_eos_increase` to count);
- median length drift and KL per token to the base, at the gate's answer length;
- the reward model's agreement with held-out human pairs.

Pure Python, no torch: the statistics are tested on hand-made samples.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from trainer.cycle_config import GateConfig

BOOTSTRAP_RESAMPLES = 2000


@dataclass
class PolicySamples:
    """One policy's answers to the gate's prompts, one entry per answer. Two policies
    evaluated with the same prompts and seeds list their answers in the same order."""

    prompt_ids: list[int]  # which held-out prompt each answer is for
    rewards: list[float]  # reward-model score (normalized: mean 0 / std 1 on base samples)
    kl: list[float]  # KL to the base, nats summed over the answer
    lengths: list[int]  # answer tokens, EOS included
    has_eos: list[bool]

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards)

    @property
    def kl_to_base(self) -> float:
        return statistics.fmean(self.kl)

    @property
    def kl_per_token(self) -> float:
        return sum(self.kl) / max(sum(self.lengths), 1)

    @property
    def median_length(self) -> float:
        return float(statistics.median(self.lengths))

    @property
    def no_eos_rate(self) -> float:
        return 1.0 - sum(self.has_eos) / self.n

    def summary(self) -> dict[str, float]:
        return {
            "mean_reward": self.mean_reward,
            "kl_to_base": self.kl_to_base,
            "kl_per_token": self.kl_per_token,
            "median_length": self.median_length,
            "no_eos_rate": self.no_eos_rate,
        }


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def paired_bootstrap_lower_bound(
    diffs: list[float], clusters: list[int], *, confidence: float, seed: int = 0
) -> float:
    """One-sided lower confidence bound of the mean of `diffs`, resampling whole clusters
    (here: held-out prompts) with replacement. With a single cluster (a store with very
    few distinct prompts) the answers themselves are resampled."""
    by_cluster: dict[int, list[float]] = defaultdict(list)
    for d, c in zip(diffs, clusters, strict=True):
        by_cluster[c].append(d)
    if len(by_cluster) < 2:
        by_cluster = {i: [d] for i, d in enumerate(diffs)}
    groups = [(sum(v), len(v)) for v in by_cluster.values()]
    if len(groups) < 2:
        return statistics.fmean(diffs)
    rng = random.Random(seed)
    means = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        picked = rng.choices(groups, k=len(groups))
        means.append(sum(s for s, _ in picked) / sum(n for _, n in picked))
    means.sort()
    return means[int((1.0 - confidence) * BOOTSTRAP_RESAMPLES)]


def no_eos_rise_p_value(candidate: PolicySamples, live: PolicySamples) -> float:
    """One-sided p-value of a two-proportion z-test that the candidate's no-EOS rate is
    higher than live's (pooled variance)."""
    n1, n2 = candidate.n, live.n
    p1, p2 = candidate.no_eos_rate, live.no_eos_rate
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0 if p1 <= p2 else 0.0
    z = (p1 - p2) / se
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def evaluate_gate(
    candidate: PolicySamples,
    live: PolicySamples,
    config: GateConfig,
    *,
    reward_agreement: float | None = None,
) -> GateResult:
    """Check every bar; the reasons name each one that failed, with the numbers."""
    if candidate.prompt_ids != live.prompt_ids:
        raise ValueError("the gate compares answers to the same prompts, in the same order")
    diffs = [c - v for c, v in zip(candidate.rewards, live.rewards, strict=True)]
    gain = statistics.fmean(diffs)
    lower = paired_bootstrap_lower_bound(diffs, candidate.prompt_ids, confidence=config.confidence)
    reasons = []
    if lower < -config.non_inferiority_margin:
        reasons.append(
            f"reward gain {gain:+.3f}: its {config.confidence:.0%} lower bound {lower:+.3f} "
            f"is below -{config.non_inferiority_margin} (not shown to be no worse)"
        )
    if gain < config.min_reward_gain:
        reasons.append(f"reward gain {gain:+.3f} is under the required {config.min_reward_gain}")
    if candidate.kl_per_token > config.max_kl_per_token:
        reasons.append(
            f"KL to base {candidate.kl_per_token:.3f} nats per token is over the budget "
            f"{config.max_kl_per_token}"
        )
    drift = abs(candidate.median_length - live.median_length) / max(live.median_length, 1.0)
    if drift > config.max_length_drift:
        reasons.append(
            f"median length drifted {drift:.0%} ({live.median_length:.0f} → "
            f"{candidate.median_length:.0f} tokens), over {config.max_length_drift:.0%}"
        )
    rise = candidate.no_eos_rate - live.no_eos_rate
    p_value = no_eos_rise_p_value(candidate, live)
    if rise > config.max_no_eos_increase and p_value < 1.0 - config.confidence:
        reasons.append(
            f"no-EOS rate rose from {live.no_eos_rate:.0%} to {candidate.no_eos_rate:.0%} "
            f"(p = {p_value:.3f})"
        )
    if reward_agreement is not None and reward_agreement < config.min_reward_agreement:
        reasons.append(
            f"reward model agrees with {reward_agreement:.0%} of held-out votes, "
            f"under {config.min_reward_agreement:.0%}"
        )
    metrics = {
        "reward_gain": gain,
        "reward_gain_lower": lower,
        "length_drift": drift,
        "no_eos_rise": rise,
        "no_eos_p_value": p_value,
        "gate_pairs": float(candidate.n),
        **{f"candidate_{k}": v for k, v in candidate.summary().items()},
        **{f"live_{k}": v for k, v in live.summary().items()},
    }
    if reward_agreement is not None:
        metrics["reward_agreement"] = reward_agreement
    return GateResult(not reasons, reasons, metrics)
