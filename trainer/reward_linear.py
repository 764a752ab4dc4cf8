"""The `linear` reward model: a Bradley–Terry linear head on frozen features of the base.

    fit_linear_reward_model(backbone, tokenizer, pairs, config, labels=, cache_dir=)
        -> (LinearRewardModel, stats)
    load_linear_reward_model(path, meta, tokenizer) -> LinearRewardModel

An answer's features are the hidden states of decoder layer `reward.feature_layer`,
averaged over the answer's tokens (the model is causal, so they read the answer in the
light of its prompt); the layers above are never run. The head is `w · (f - mean) / std`,
fitted with L-BFGS on every judgment at once:

    Σ_pairs  a_i · softplus(-(r_chosen - r_rejected))                 Bradley–Terry
  + λ Σ_labels c_j · softplus(-y_j · (r_j + b))                       logistic, y = ±1
  ─────────────────────────────────────────────── + l2 · |w|²
                Σ a_i + λ Σ c_j

`a_i` and `c_j` are the examples' weights (the per-user weight, times a retry's lower
weight), `λ` is `reward.pointwise_weight` and `b` a learned offset (where good turns to
bad on the score's scale; it is not part of the score, and not penalized). The loss is
convex, so the fit is deterministic and needs no learning rate or epochs.

Features are cached on disk (`FeatureCache`), keyed by the backbone, the layer and the
exact token ids of prompt + answer, so a cycle computes features only for answers it
has not seen.

Why not the LoRA reward model (TRL's `RewardTrainer`) for this: a CPU install collects a
few hundred votes per cycle, and on those a fine-tuned 135M network stayed near chance
(0.48–0.54 agreement with the loop benchmark's oracle on held-out answer pairs, after
64–238 training pairs), while this head reached 0.81 on 80 of the same pairs and 0.78–0.80
in the recorded benchmark run, fitting in seconds instead of minutes. A
logistic regression on fixed features is a few lines of torch; a library for it
(scikit-learn) would be a dependency for one call.

Artifact: `linear_head.safetensors` (`weight`, `feature_mean`, `feature_std`) beside the
tokenizer and `reward.json`, whose `method` is `linear`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from trainer.errors import RewardModelError
from trainer.reward import Prompt, RewardModel, prompt_key, render_with_answer_start

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from trainer.data import LabeledAnswer, PreferencePair
    from trainer.reward_config import RewardConfig

HEAD_FILE = "linear_head.safetensors"
MAX_ITERATIONS = 500  # L-BFGS iterations; the fit converges long before on a few hundred pairs


class LinearRewardModel(RewardModel):
    """Frozen, truncated backbone + linear head: text in, scalar scores out."""

    def __init__(
        self,
        backbone: Any,
        tokenizer: PreTrainedTokenizerBase,
        head: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, tokenizer, **kwargs)
        self.head = head or {}  # float64 tensors on the CPU, where the features are gathered
        self.computed = 0  # answers the last `features` call ran through the model
        self.feature_cache: FeatureCache | None = None  # for `cached()`
        self._use_cache = False

    @torch.no_grad()
    def features(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
        cache: FeatureCache | None = None,
    ) -> torch.Tensor:
        """(N, hidden) float64: each answer's mean hidden state at the feature layer.
        With a `cache`, only answers it lacks go through the model (and are added)."""
        out = torch.zeros((len(prompts), self.model.config.hidden_size), dtype=torch.float64)
        todo = list(range(len(prompts)))
        keys: list[str] = []
        if cache is not None:
            keys = [
                cache.key(render_with_answer_start(self.tokenizer, p, c, self.max_length))
                for p, c in zip(prompts, completions, strict=True)
            ]
            found = cache.get(keys)
            todo = [i for i, key in enumerate(keys) if key not in found]
            for i, key in enumerate(keys):
                if key in found:
                    out[i] = found[key]
        self.computed = len(todo)
        if not todo:
            return out
        batches = -(-len(todo) // self.batch_size)
        for step, (batch, input_ids, attention_mask, answer_mask) in enumerate(
            self._batches([prompts[i] for i in todo], [completions[i] for i in todo], True), 1
        ):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden = hidden.last_hidden_state  # (B, T, H)
            weights = answer_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1)  # (B, H)
            out[[todo[j] for j in batch]] = pooled.double().cpu()
            if progress is not None:
                progress(step, batches)
        if cache is not None:
            cache.put([keys[i] for i in todo], out[todo])
        return out

    def raw_scores(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        if not self.head:
            raise RewardModelError("this linear reward model has no head yet")
        cache = self.feature_cache if self._use_cache else None
        feats = self.features(prompts, completions, cache=cache)
        return standardized(feats, self.head).mv(self.head["weight"]).tolist()

    @contextmanager
    def cached(self) -> Iterator[None]:
        """Score stored answers through the feature cache (held-out votes), not what PPO
        samples, which would only fill it."""
        self._use_cache = self.feature_cache is not None
        try:
            yield
        finally:
            self._use_cache = False

    def save_weights(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.items()},
            str(directory / HEAD_FILE),
        )


def standardized(features: torch.Tensor, head: dict[str, torch.Tensor]) -> torch.Tensor:
    return (features - head["feature_mean"]) / head["feature_std"]


def auto_feature_layer(n_layers: int) -> int:
    """A third of the way up: where the loop benchmark's votes were best separated on
    SmolLM2-135M (layer 10 of 30), for a backbone of any depth."""
    return max(1, round(n_layers / 3))


def load_feature_backbone(path: str, layer: int, *, device: str = "cpu") -> Any:
    """The base model's decoder without its LM head, cut after `layer` layers (0: a third
    of its layers), frozen. Its last hidden state is then that layer's output (the final
    norm is dropped)."""
    try:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    except OSError as exc:
        raise RewardModelError(f"cannot load the reward backbone {path!r}: {exc}") from exc
    total = model.config.num_hidden_layers
    layer = layer or auto_feature_layer(total)
    if layer > total:
        raise RewardModelError(
            f"reward.feature_layer is {layer} but the backbone has {total} layers"
        )
    model.layers = model.layers[:layer]
    model.config.num_hidden_layers = layer
    model.norm = torch.nn.Identity()
    model.requires_grad_(False)
    return model.to(device).eval()


class FeatureCache:
    """Answer features on disk, so a cycle runs the backbone only on answers it has not
    seen: `<root>/<backbone and layer digest>/<shard>.safetensors`, each shard one
    (N, hidden) float32 tensor (the pooled features are float32 sums, so nothing is
    lost) with its keys in the file's metadata. A key is a digest of the exact token
    ids of prompt + answer and where the answer starts, so a change of chat template,
    tokenizer or `max_length` misses instead of reading stale features; the directory
    is named by the backbone (its path with the size and time of its weight files, or
    a Hub id) and the layer."""

    COMPACT_AFTER = 32  # shards; then they are merged into one

    def __init__(self, root: Path, backbone: str, layer: int) -> None:
        identity = f"{backbone_identity(backbone)}|layer={layer}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{digest}-layer{layer}"
        self._features: dict[str, torch.Tensor] | None = None

    @staticmethod
    def key(rendered: tuple[list[int], int]) -> str:
        ids, answer_start = rendered
        return hashlib.sha256(json.dumps([answer_start, ids]).encode()).hexdigest()[:32]

    def get(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        features = self._load()
        return {k: features[k] for k in keys if k in features}

    def put(self, keys: Sequence[str], features: torch.Tensor) -> None:
        if not keys:
            return
        self._write(list(keys), features)
        known = self._load()
        for key, row in zip(keys, features.float(), strict=True):
            known[key] = row.double()
        shards = self._shards()
        if len(shards) > self.COMPACT_AFTER:
            merged = {k: known[k] for k in known}
            self._write(list(merged), torch.stack(list(merged.values())))
            for shard in shards:
                shard.unlink(missing_ok=True)

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir.is_dir() else []

    def _load(self) -> dict[str, torch.Tensor]:
        if self._features is None:
            self._features = {}
            for shard in self._shards():
                try:
                    with safe_open(str(shard), "pt") as f:
                        keys = json.loads(f.metadata()["keys"])
                        rows = f.get_tensor("features")
                except (OSError, ValueError, KeyError, RuntimeError):
                    continue  # a shard another process is removing, or a damaged one
                for key, row in zip(keys, rows, strict=True):
                    self._features[key] = row.double()
        return self._features

    def _write(self, keys: list[str], features: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file({"features": features.float().contiguous()}, str(tmp), {"keys": json.dumps(keys)})
        tmp.rename(self.dir / name)


def backbone_identity(backbone: str) -> str:
    """The backbone's path with the names, sizes and times of its weight files (a new
    checkpoint in the same place is another backbone), or the Hub id as given."""
    path = Path(backbone)
    if not path.is_dir():
        return backbone
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    stamps = [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
    return "|".join([str(path.resolve()), *stamps])


def fit_head(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    l2: float,
    pair_weights: torch.Tensor | None = None,
    labeled: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    label_weights: torch.Tensor | None = None,
    pointwise_weight: float = 0.0,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The linear head on (N, H) features of chosen and rejected answers, with their
    weights, and (M, H) features of labeled answers (`labels`: True good, False bad);
    the module docstring has the loss."""
    n, hidden = chosen.shape[0], chosen.shape[1]
    if labeled is None or labels is None or pointwise_weight <= 0:
        labeled = torch.zeros((0, hidden), dtype=torch.float64)
        labels = torch.zeros(0, dtype=torch.bool)
        label_weights = None
    pair_w = torch.ones(n, dtype=torch.float64) if pair_weights is None else pair_weights.double()
    label_w = (
        torch.ones(len(labels), dtype=torch.float64)
        if label_weights is None
        else label_weights.double()
    )
    rows = torch.cat([chosen, rejected, labeled])
    head = {"feature_mean": rows.mean(0), "feature_std": rows.std(0).clamp_min(1e-6)}
    diff = standardized(chosen, head) - standardized(rejected, head)  # (N, H)
    points = standardized(labeled, head)  # (M, H)
    signs = labels.double() * 2 - 1  # (M,) +1 good, -1 bad
    total = pair_w.sum() + pointwise_weight * label_w.sum()
    weight = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    params = [weight, offset] if len(signs) else [weight]
    optimizer = torch.optim.LBFGS(params, max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe")
    softplus = torch.nn.functional.softplus

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = (pair_w * softplus(-diff.mv(weight))).sum()
        if len(signs):
            value = (
                value
                + pointwise_weight
                * (label_w * softplus(-signs * (points.mv(weight) + offset))).sum()
            )
        value = value / total + l2 * weight.dot(weight)
        value.backward()
        return value

    optimizer.step(loss)
    iterations = int(optimizer.state[weight]["n_iter"])
    head["weight"] = weight.detach()
    head["offset"] = offset.detach()
    margins = diff.mv(head["weight"])
    stats: dict[str, float] = {
        "train_loss": float((pair_w * softplus(-margins)).sum() / pair_w.sum()) if n else 0.0,
        "train_accuracy": float((margins > 0).double().mean()) if n else 0.0,
        "train_steps": iterations,
    }
    if len(signs):
        logits = points.mv(head["weight"]) + head["offset"]
        stats["train_label_accuracy"] = float(((logits > 0) == labels).double().mean())
        stats["offset"] = float(head["offset"])
    return head, stats


def fit_linear_reward_model(
    backbone: str,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    config: RewardConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    labels: Sequence[LabeledAnswer] = (),
    cache_dir: Path | None = None,
) -> tuple[LinearRewardModel, dict[str, float]]:
    """Fit on the pairs and (unless `reward.pointwise_weight` is 0) the labeled answers,
    each at its `trained_weight`; features come from `cache_dir` where it has them."""
    model = LinearRewardModel(
        load_feature_backbone(backbone, config.feature_layer, device=config.device),
        tokenizer,
        max_length=config.max_length,
        batch_size=config.score_batch_size,
    )
    if config.pointwise_weight <= 0:
        labels = ()
    # each answer once, even when it sits in several examples
    rows: dict[tuple[str, str], int] = {}
    prompts: list[Prompt] = []
    answers: list[str] = []

    def row(prompt: Prompt, answer: str) -> int:
        key = (prompt_key(prompt), answer)
        if key not in rows:
            rows[key] = len(answers)
            prompts.append(prompt)
            answers.append(answer)
        return rows[key]

    chosen_rows = [row(p.prompt, p.chosen) for p in pairs]
    rejected_rows = [row(p.prompt, p.rejected) for p in pairs]
    label_rows = [row(e.prompt, e.completion) for e in labels]
    cache = (
        FeatureCache(cache_dir, backbone, config.feature_layer) if cache_dir is not None else None
    )
    started = time.perf_counter()
    feats = model.features(prompts, answers, progress, cache)
    feature_seconds = time.perf_counter() - started
    head, stats = fit_head(
        feats[chosen_rows],
        feats[rejected_rows],
        l2=config.l2,
        pair_weights=torch.tensor([p.trained_weight for p in pairs], dtype=torch.float64),
        labeled=feats[label_rows],
        labels=torch.tensor([e.label for e in labels], dtype=torch.bool),
        label_weights=torch.tensor([e.trained_weight for e in labels], dtype=torch.float64),
        pointwise_weight=config.pointwise_weight,
    )
    model.head = head
    model.feature_cache = cache
    return model, {
        **stats,
        "feature_seconds": feature_seconds,
        "answers": len(answers),
        "features_computed": model.computed,
        "features_cached": len(answers) - model.computed,
        "train_labels": len(labels),
    }


def load_linear_reward_model(
    path: Path,
    meta: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: str = "cpu",
    backbone: str | None = None,
    batch_size: int = 8,
) -> LinearRewardModel:
    try:
        head = load_file(str(path / HEAD_FILE))
    except OSError as exc:
        raise RewardModelError(f"{path} has no readable {HEAD_FILE}: {exc}") from exc
    layer = int(meta["config"]["feature_layer"])
    norm = meta["normalization"]
    return LinearRewardModel(
        load_feature_backbone(backbone or meta["backbone"], layer, device=device),
        tokenizer,
        {k: v.double() for k, v in head.items()},
        mean=norm["mean"],
        std=norm["std"],
        max_length=meta["max_length"],
        batch_size=batch_size,
        name=meta.get("name"),
    )
