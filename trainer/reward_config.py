"""Configuration of the reward model: data building, training (a LoRA or a linear head)
and score normalization.

Kept apart from `trainer/reward.py` (as TRL keeps `reward_config.py` beside
`reward_trainer.py`) and free of heavy imports, so the app's config loader can read it
from TOML (`[reward]`) and the environment (`RLHF_CHAT_REWARD_<FIELD>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_BACKBONE = "base"
NORMALIZE_SOURCES = ("base_samples", "dataset")
METHODS = ("lora", "linear")


@dataclass
class RewardConfig:
    """How the reward model is built from the store's judgments and trained."""

    backbone: str = BASE_BACKBONE
    """`base` (the configured base model, `model.source`), a Hub id or a checkpoint
    directory. A sequence-classification head with one output is put on top of it."""

    method: str = "linear"
    """`linear` (the default): keep the backbone frozen and fit a Bradley–Terry linear
    head on the mean of one layer's hidden states over the answer (`feature_layer`, `l2`;
    trainer/reward_linear.py). On a few hundred votes it agreed with a simulated voter on
    ~80% of held-out answer pairs where the LoRA model stayed at chance (measured).
    `lora`: fine-tune a LoRA and a score head with TRL's `RewardTrainer` (the `lora_*`,
    `learning_rate`, `epochs` and `batch_size` settings); pick it only with thousands of
    judgments, or a GPU and a backbone worth fine-tuning."""

    feature_layer: int = 0
    """`linear` only: the decoder layer whose hidden states are averaged over the answer's
    tokens (1 = the first; layers above it are never run). 0: a third of the backbone's
    layers (10 of SmolLM2-135M's 30, the best layer measured on its votes)."""

    l2: float = 10.0
    """`linear` only: L2 penalty on the head's weights (features are standardized). On the
    loop benchmark's votes 10 agreed best with the oracle of 0.3–30."""

    lora_r: int = 16
    """LoRA rank."""

    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""

    lora_dropout: float = 0.0
    """Dropout on the LoRA path; 0 keeps training and scoring deterministic."""

    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names that get LoRA adapters (the score head is always fully trained)."""

    lora_layers: int = 0
    """LoRA on the last this-many decoder layers only (0: every layer). The backward
    pass then stops there, so training takes about half the time with 8 of 30 layers."""

    learning_rate: float = 2e-4
    """AdamW learning rate (linear decay to 0)."""

    epochs: int = 2
    """Passes over the training pairs."""

    batch_size: int = 8
    """Pairs per optimizer step (each pair is two sequences)."""

    max_length: int = 512
    """Token limit of prompt + answer; longer ones lose the start of the prompt, never
    the answer (the score is read at the last token)."""

    min_pairs: int = 32
    """Fewer preference pairs than this and a training run is recorded as skipped."""

    heldout_fraction: float = 0.2
    """Share of conversations held out for accuracy and calibration (split by
    conversation, never by row)."""

    max_user_weight_share: float = 0.2
    """No user's share of the training set's total weight above this, once there are
    enough users (at least 1 / this many): each user's examples are weighted by
    `min(1, C / n_u)` with `C` the largest total that keeps every share within it.
    With fewer users every user's total is made equal instead, so one person alone
    trains on every judgment at full weight. Nothing is dropped (trainer/data.py)."""

    user_share_cap: float | None = None
    """Deprecated: the old name of `max_user_weight_share` (which replaced a hard cap
    that dropped examples). When set, it is used as `max_user_weight_share`."""

    pointwise_weight: float = 0.5
    """`linear` only: what one unpaired label (a thumb without a partner, a both-bad
    answer, a retry) weighs in the fit against one preference pair's 1. A label says
    less than a comparison, and this keeps many of them from outweighing the pairs; 0
    leaves the labels out. Measured on SmolLM2 features with three simulated tastes
    (about 50 pairs and 60 thumbs, 20 draws each): 0.5 added 1.6–3.0 points of held-out
    agreement over pairs alone, 0.25 added 0.9–2.7, 1.0 0.9–3.1 with more spread."""

    seed: int = 0
    """Seeds the split, the head's init and training order, and which examples a
    LoRA reward model (no per-example weights) leaves out for a weighted-down user."""

    device: str = "cpu"
    """torch device for training and scoring: `cpu`, `cuda[:N]` or `mps`."""

    normalize_on: str = "base_samples"
    """What scores are normalized to mean 0 / std 1 on: `base_samples` (answers the base
    model, PPO's reference policy, samples for training prompts) or `dataset` (the
    answers in the training pairs; faster, but not what PPO will see)."""

    normalize_samples: int = 32
    """How many prompts (and so answers) normalization uses."""

    normalize_max_new_tokens: int = 48
    """Length limit of each base-model answer sampled for normalization: PPO's answer
    length (`ppo.max_new_tokens`), so the scores PPO sees have mean 0 and std 1."""

    normalize_temperature: float = 0.7
    """Sampling temperature of those answers (the serving temperature)."""

    score_batch_size: int = 8
    """Sequences per forward pass when scoring."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"reward.method must be one of {', '.join(METHODS)}, not {self.method!r}"
            )
        if self.feature_layer < 0:
            raise ValueError(
                f"reward.feature_layer must be 0 (a third of the layers) or more, "
                f"not {self.feature_layer}"
            )
        if not self.l2 > 0:
            raise ValueError(f"reward.l2 must be above 0, not {self.l2}")
        if not self.backbone.strip():
            raise ValueError("reward.backbone is empty: use 'base', a Hub id or a directory")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "score_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"reward.{name} must be at least 1, not {getattr(self, name)}")
        if self.lora_layers < 0:
            raise ValueError(f"reward.lora_layers must be 0 (all) or more, not {self.lora_layers}")
        if not self.lora_targets:
            raise ValueError("reward.lora_targets is empty: name modules such as q_proj, v_proj")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"reward.lora_dropout must be within [0, 1), not {self.lora_dropout}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(
                f"reward.learning_rate must be within (0, 1), not {self.learning_rate}"
            )
        if self.max_length < 16:
            raise ValueError(f"reward.max_length must be at least 16 tokens, not {self.max_length}")
        if self.min_pairs < 1:
            raise ValueError(f"reward.min_pairs must be at least 1, not {self.min_pairs}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(
                f"reward.heldout_fraction must be within [0, 1), not {self.heldout_fraction}"
            )
        if self.user_share_cap is not None:
            self.max_user_weight_share = self.user_share_cap
        if not 0.0 < self.max_user_weight_share <= 1.0:
            raise ValueError(
                "reward.max_user_weight_share must be within (0, 1] (1.0 turns it off), "
                f"not {self.max_user_weight_share}"
            )
        if not 0.0 <= self.pointwise_weight <= 10.0:
            raise ValueError(
                f"reward.pointwise_weight must be within [0, 10], not {self.pointwise_weight}"
            )
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"reward.device must be cpu, cuda[:N] or mps, not {self.device!r}")
        if self.normalize_on not in NORMALIZE_SOURCES:
            raise ValueError(
                f"reward.normalize_on must be one of {', '.join(NORMALIZE_SOURCES)}, "
                f"not {self.normalize_on!r}"
            )
        if self.normalize_samples < 2:
            raise ValueError("reward.normalize_samples must be at least 2 (a std needs two)")
        if self.normalize_max_new_tokens < 1:
            raise ValueError("reward.normalize_max_new_tokens must be at least 1")
        if not 0.0 < self.normalize_temperature <= 2.0:
            raise ValueError(
                f"reward.normalize_temperature must be within (0, 2], "
                f"not {self.normalize_temperature}"
            )
