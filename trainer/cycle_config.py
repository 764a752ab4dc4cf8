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

    ppo_rounds: int = 4
    """PPO rounds per cycle, warm-started from the live adapter (each about 80 s with
    `ppo.rollout_batch_size = 32` on a 2-core CPU)."""

    heldout_prompts: int = 32
    """Held-out prompts (never trained on) the gate evaluates live and candidate on; at
    most a quarter of the distinct prompts in the store."""

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
    """Bars a candidate must clear before it is published (trainer/gate.py)."""

    samples: int = 128
    """Answer pairs the gate compares: candidate and live each answer the held-out prompts
    this many times in all (prompts repeated with different seeds), with the same seeds.
    Fewer pairs make the lower bound wide and reject good candidates; each pair costs two
    generations (about 3 s per pair on a 2-core CPU at 40 tokens)."""

    max_new_tokens: int = 0
    """Answer length of the gate's samples; 0: the serving length (`serving.max_new_tokens`;
    `ppo.max_new_tokens` where no server config is at hand),
    so length drift and missing EOS are measured where users see them."""

    confidence: float = 0.95
    """Confidence of the one-sided reward bound and of the no-EOS test."""

    non_inferiority_margin: float = 0.2
    """The lower bound of the mean reward gain must be above minus this (reward-model
    units: std 1 on base samples). 0 demands a gain proven positive."""

    min_reward_gain: float = 0.0
    """The mean reward gain over the pairs must reach at least this (0: no worse on
    average; a positive value asks every version to improve by that much)."""

    max_kl_per_token: float = 0.25
    """Largest KL to the base model per answer token (nats), at the gate's answer length."""

    max_length_drift: float = 0.5
    """Median answer length may change by at most this fraction of the live one's."""

    max_no_eos_increase: float = 0.05
    """A rise in the share of answers that never end rejects when it is larger than this
    and significant (one-sided two-proportion test at `confidence`)."""

    min_reward_agreement: float = 0.55
    """The reward model must agree with at least this share of held-out human pairs
    (skipped when there are none)."""

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ValueError(f"gate.samples must be at least 2, not {self.samples}")
        if self.max_new_tokens < 0:
            raise ValueError("gate.max_new_tokens must be 0 (the serving length) or more")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"gate.confidence must be within [0.5, 1), not {self.confidence}")
        if not self.non_inferiority_margin >= 0:
            raise ValueError("gate.non_inferiority_margin must be zero or more")
        if not self.max_kl_per_token > 0:
            raise ValueError("gate.max_kl_per_token must be positive")
        if not 0 < self.max_length_drift:
            raise ValueError("gate.max_length_drift must be positive")
        if not 0 <= self.max_no_eos_increase <= 1:
            raise ValueError("gate.max_no_eos_increase must be within [0, 1]")
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
