"""The gate: a candidate policy ships only if it beats the live one without signs of
reward hacking (Gao et al. 2022: proxy reward keeps rising while true reward falls
past some KL — so bound KL, length drift and missing EOS, and check the reward model
still agrees with held-out human votes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trainer.cycle_config import GateConfig


@dataclass
class PolicyStats:
    """What the gate needs to know about one policy on the held-out prompts."""

    mean_reward: float
    kl_to_base: float
    median_length: float
    no_eos_rate: float


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate_gate(
    candidate: PolicyStats,
    live: PolicyStats,
    config: GateConfig,
    *,
    reward_agreement: float | None = None,
) -> GateResult:
    """Check every bar; the reasons name each one that failed, with the numbers."""
    reasons = []
    gain = candidate.mean_reward - live.mean_reward
    if gain <= config.min_reward_gain:
        reasons.append(f"reward gain {gain:.3f} is not above {config.min_reward_gain}")
    if candidate.kl_to_base > config.max_kl:
        reasons.append(f"KL to base {candidate.kl_to_base:.2f} is over the budget {config.max_kl}")
    drift = abs(candidate.median_length - live.median_length) / max(live.median_length, 1.0)
    if drift > config.max_length_drift:
        reasons.append(
            f"median length drifted {drift:.0%} ({live.median_length:.0f} → "
            f"{candidate.median_length:.0f} tokens), over {config.max_length_drift:.0%}"
        )
    rise = candidate.no_eos_rate - live.no_eos_rate
    if rise > config.max_no_eos_increase:
        reasons.append(
            f"no-EOS rate rose from {live.no_eos_rate:.0%} to {candidate.no_eos_rate:.0%}"
        )
    if reward_agreement is not None and reward_agreement < config.min_reward_agreement:
        reasons.append(
            f"reward model agrees with {reward_agreement:.0%} of held-out votes, "
            f"under {config.min_reward_agreement:.0%}"
        )
    metrics = {
        "reward_gain": gain,
        "length_drift": drift,
        "no_eos_rise": rise,
        **{f"candidate_{k}": v for k, v in asdict(candidate).items()},
        **{f"live_{k}": v for k, v in asdict(live).items()},
    }
    if reward_agreement is not None:
        metrics["reward_agreement"] = reward_agreement
    return GateResult(not reasons, reasons, metrics)
