"""Settings of a LoRA PPO round: `PPOConfig`, the `[ppo]` section of the app's config.

Defaults fit a 2-core CPU and SmolLM2-135M (small batches, short completions);
`PPOConfig.gpu()` is the preset for one CUDA GPU. No torch here, so reading the
config stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class PPOConfig:
    """LoRA PPO (actor–critic) against a reward function, anchored to the base by KL."""

    rounds: int = 1
    """PPO rounds per run; each samples `rollout_batch_size` prompts, scores, then trains."""

    rollout_batch_size: int = 32
    """Prompts sampled (one completion each) per round."""

    minibatch_size: int = 4
    """Completions per gradient step; must divide `rollout_batch_size`. Scoring passes use
    the same size, which keeps the first step's ratio exactly 1."""

    ppo_epochs: int = 2
    """Passes over each round's samples, in freshly shuffled minibatches."""

    learning_rate: float = 3e-4
    """Adam learning rate for the LoRA weights and the value head (Adam eps is 1e-5). On
    SmolLM2-135M with r=8 it gives an approx-KL of a few 1e-3 per step; 1e-4 barely moves."""

    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each step."""

    lora_r: int = 8
    """LoRA rank of a fresh adapter (a warm start keeps the adapter's own)."""

    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""

    lora_dropout: float = 0.0
    """Must stay 0: dropout would make the sampling and training passes disagree."""

    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    """Modules that get a fresh adapter (SmolLM2/Llama attention projections)."""

    temperature: float = 0.7
    """Sampling temperature; logprobs of policy, old policy and reference are all taken
    from logits divided by it. SmolLM2-135M turns incoherent near 1.0."""

    max_new_tokens: int = 48
    """Completion length limit; a completion cut off here has no EOS."""

    max_prompt_tokens: int = 256
    """Longer prompts lose their oldest turns; a last user turn alone longer than this is skipped."""

    init_kl_coef: float = 0.1
    """Starting beta of the per-token KL penalty -beta * (logp - ref_logp); a warm start
    continues from the beta saved with its adapter."""

    target_kl: float | None = 3.0
    """KL to the base (nats per completion) the adaptive controller steers beta towards
    (Ziegler et al. 2019); empty/None keeps beta fixed."""

    horizon: int = 128
    """Adaptive controller horizon in samples: beta moves at most 20% per `horizon` samples,
    so 5% per default round. (Ziegler et al. used 10,000 with 512-sample batches; a cycle
    here draws about a hundred samples, and a horizon of thousands would never move.)"""

    cliprange: float = 0.2
    """Policy ratio clip epsilon."""

    cliprange_value: float = 0.2
    """Value prediction clip around the sampling-time value."""

    vf_coef: float = 0.1
    """Weight of the value loss beside the policy loss."""

    gamma: float = 1.0
    """Discount (1: the score at the end counts fully for every token)."""

    lam: float = 0.95
    """GAE lambda."""

    no_eos_penalty: float | None = None
    """Score given instead of the reward to a completion that never emits EOS; empty/None
    (the default) scores such completions like any other. Most SmolLM2 answers run past
    a rollout of `max_new_tokens`: with a fixed -1, 88% of a round's samples scored -1
    whatever they said (measured), and PPO learned length, not taste. The reward model
    reads the tokens it is given, so a truncated answer is judged on what it says so far;
    the gate checks missing EOS at the serving length instead."""

    seed: int = 0
    """Seeds prompt order, sampling, minibatch shuffling and a fresh adapter."""

    device: str = "cpu"
    """torch device for the policy: `cpu`, `cuda`, `cuda:1`…"""

    batched_generation: bool = True
    """Sample `generation_batch_size` prompts together (left-padded); off: one at a time."""

    generation_batch_size: int = 16
    """Prompts per generate call when `batched_generation` is on."""

    generation_cache: bool = True
    """Reuse the key/value cache while sampling; off: every token re-runs the whole sequence."""

    batched_scoring: bool = True
    """Old-policy, reference and value passes in minibatch-sized batches; off: one sequence
    at a time."""

    def __post_init__(self) -> None:
        for name in (
            "rounds",
            "rollout_batch_size",
            "minibatch_size",
            "ppo_epochs",
            "lora_r",
            "lora_alpha",
            "max_new_tokens",
            "max_prompt_tokens",
            "horizon",
            "generation_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ppo.{name} must be at least 1, not {getattr(self, name)}")
        if self.rollout_batch_size % self.minibatch_size:
            raise ValueError(
                f"ppo.minibatch_size ({self.minibatch_size}) must divide "
                f"ppo.rollout_batch_size ({self.rollout_batch_size})"
            )
        for name in (
            "learning_rate",
            "max_grad_norm",
            "temperature",
            "cliprange",
            "cliprange_value",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"ppo.{name} must be positive, not {getattr(self, name)}")
        for name in ("init_kl_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"ppo.{name} must not be negative, not {getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"ppo.target_kl must be positive or empty, not {self.target_kl}")
        if self.lora_dropout != 0.0:
            raise ValueError("ppo.lora_dropout must be 0: dropout breaks PPO's ratio of 1")
        if not (0.0 < self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError("ppo.gamma must be in (0, 1] and ppo.lam in [0, 1]")
        if not self.lora_target_modules:
            raise ValueError("ppo.lora_target_modules is empty: name at least one module")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"ppo.device must be cpu, cuda[:N] or mps, not {self.device!r}")

    @classmethod
    def gpu(cls, **overrides: Any) -> PPOConfig:
        """Preset for one CUDA GPU: bigger batches, longer completions, more epochs."""
        preset = cls(
            device="cuda",
            rollout_batch_size=64,
            minibatch_size=16,
            generation_batch_size=64,
            ppo_epochs=4,
            max_new_tokens=128,
            max_prompt_tokens=512,
        )
        return replace(preset, **overrides)
