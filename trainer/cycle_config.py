"""Configuration of the training loop: when cycles run, what a candidate must clear,
and how it ships. `TrainingConfig` bundles everything one cycle needs, so it can be
handed to a child process whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import ModelConfig
from trainer.ppo_config import PPOConfig
from trainer.reward_config import RewardConfig


@dataclass
class ScheduleConfig:
    """When the web process runs training cycles by itself."""

    enabled: bool = True
    """Run cycles on a schedule inside the server process (in a child process)."""

    interval_minutes: float = 60.0
    """Minutes between cycles (ignored when `cron` is set)."""

    cron: str = ""
    """A crontab expression ("0 3 * * *": every night at 03:00) instead of an interval."""

    in_child_process: bool = True
    """Run the heavy work in a child process, so a crash or OOM cannot stop the chat."""

    def __post_init__(self) -> None:
        if self.interval_minutes <= 0:
            raise ValueError("schedule.interval_minutes must be positive")
        if self.cron and len(self.cron.split()) != 5:
            raise ValueError("schedule.cron must have five fields, e.g. '0 3 * * *'")


@dataclass
class CycleConfig:
    """One training cycle: when it trains, and how its candidate is promoted."""

    min_new_feedback: int = 20
    """Train only when at least this many judgments arrived since the last cycle."""

    promotion: str = "gate"
    """`gate`: promote as soon as the gate passes; `canary`: publish as candidate and
    promote after it wins arena battles against live."""

    canary_min_votes: int = 20
    """Battles a canary candidate needs (ties count) before it is judged."""

    canary_win_rate: float = 0.55
    """Win rate (ties half) a canary candidate needs over its battles against live."""

    ppo_rounds: int = 2
    """PPO rounds per cycle, warm-started from the live adapter."""

    heldout_prompts: int = 16
    """Held-out prompts the gate evaluates live and candidate on."""

    stage_pause_seconds: float = 0.0
    """Test-only: wait this long after recording each stage, so a crash test can kill
    a cycle at stages that otherwise last milliseconds (publish, promote). 0: off."""

    def __post_init__(self) -> None:
        if self.promotion not in ("gate", "canary"):
            raise ValueError("cycle.promotion must be 'gate' or 'canary'")
        if self.min_new_feedback < 0:
            raise ValueError("cycle.min_new_feedback must be zero or more")
        if not 0 < self.canary_win_rate < 1:
            raise ValueError("cycle.canary_win_rate must be between 0 and 1")
        if self.ppo_rounds < 1 or self.heldout_prompts < 1 or self.canary_min_votes < 1:
            raise ValueError("cycle.ppo_rounds, heldout_prompts and canary_min_votes must be >= 1")
        if self.stage_pause_seconds < 0:
            raise ValueError("cycle.stage_pause_seconds must be zero or more")


@dataclass
class GateConfig:
    """Bars a candidate must clear before it is published."""

    min_reward_gain: float = 0.0
    """Mean reward-model score on held-out prompts must rise by more than this over the
    live policy (scores are normalized: mean 0, std 1 on reference samples)."""

    max_kl: float = 10.0
    """Largest KL to the base model, in nats per answer (summed over tokens)."""

    max_length_drift: float = 0.5
    """Median answer length may change by at most this fraction of the live one's."""

    max_no_eos_increase: float = 0.1
    """The share of answers that never end may rise by at most this much."""

    min_reward_agreement: float = 0.55
    """The reward model must agree with at least this share of held-out human pairs
    (skipped when there are none)."""

    def __post_init__(self) -> None:
        if self.max_kl <= 0:
            raise ValueError("gate.max_kl must be positive")
        if not 0 < self.max_length_drift:
            raise ValueError("gate.max_length_drift must be positive")
        if not 0 <= self.min_reward_agreement <= 1:
            raise ValueError("gate.min_reward_agreement must be within [0, 1]")


@dataclass
class TrainingConfig:
    """Everything `run_cycle` needs (built by the app from its config)."""

    data_dir: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
