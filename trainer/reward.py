"""The reward model: Bradley–Terry on the voters' preference pairs.

    train_reward_model(store, config, data_dir=, base_model=) -> RewardOutcome
    RewardModel.score(prompts, completions) -> list[float]       all PPO needs from it
    load_reward_model(path) / latest_reward_model(store)

Two methods (`reward.method`):
- `lora` (the default): TRL's `RewardTrainer` (its loss:
  `-logsigmoid(r_chosen - r_rejected).mean()`) on
  `AutoModelForSequenceClassification(num_labels=1)` with a LoRA on the backbone and the
  score head trained in full; this module.
- `linear`: the base model stays frozen and a linear head is fitted on the mean of one
  layer's hidden states over the answer; trainer/reward_linear.py. Far better on the
  few hundred votes of a CPU install.

Sequences are rendered by `chat_prompt_ids`, the one chat rendering serving uses, and
handed over already tokenized, so training and scoring see the same ids; a sequence
over `max_length` loses the start of its prompt, never its end, where the score is read.

Scores are normalized to mean 0 / std 1 over answers the base model (PPO's reference
policy) samples for training prompts (`normalize_on = "base_samples"`), or over the
dataset's own answers (`"dataset"`: faster, but not the distribution PPO starts from).
Held-out pairwise accuracy and calibration (Brier score and ECE of
`sigmoid(r_chosen - r_rejected)`) are measured on raw scores, the scale the
Bradley–Terry loss fits.

An artifact is `<data_dir>/reward/<name>/`: the weights (the adapter with the score
head, or the linear head), the tokenizer and `reward.json` (method, backbone,
normalization, metrics), written to a temporary
sibling and renamed, then registered as a `reward` version and promoted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, PeftModel, TaskType
from transformers import AutoModelForSequenceClassification, PrinterCallback, TrainerCallback

from trainer import distributed
from trainer.data import (
    DataReport,
    FeedbackDataset,
    PreferencePair,
    build_dataset,
    weighted_subsample,
)
from trainer.errors import RewardModelError, TrainingSkipped
from trainer.models import chat_prompt_ids, load_causal_lm, load_tokenizer, resolve_base_model
from trainer.reward_config import BASE_BACKBONE, RewardConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from storage import Store

log = logging.getLogger(__name__)

ARTIFACT_FILE = "reward.json"
FEATURES_DIR = "features"  # <data_dir>/reward/features: the linear method's feature cache
Prompt = str | Sequence[dict[str, Any]]
Progress = Callable[[int, int], None]


# -- scoring -------------------------------------------------------------------------


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A prompt as chat messages: a string is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def render(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: str, max_length: int
) -> list[int]:
    """Token ids of prompt + answer, ending where the score is read; the prompt's start
    is cut when too long."""
    messages = as_messages(prompt) + [{"role": "assistant", "content": completion}]
    return chat_prompt_ids(tokenizer, messages, add_generation_prompt=False)[-max_length:]


def render_with_answer_start(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: str, max_length: int
) -> tuple[list[int], int]:
    """`render`'s ids and the index of the answer's first token in them (the prompt
    rendered alone is a prefix of prompt + answer)."""
    messages = as_messages(prompt)
    prompt_length = len(chat_prompt_ids(tokenizer, messages, add_generation_prompt=True))
    full = chat_prompt_ids(
        tokenizer,
        messages + [{"role": "assistant", "content": completion}],
        add_generation_prompt=False,
    )
    cut = max(0, len(full) - max_length)
    ids = full[cut:]
    return ids, min(max(0, prompt_length - cut), len(ids) - 1)


class RewardModel:
    """A trained reward model, in eval mode: text in, normalized scalar scores out."""

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        max_length: int = 512,
        batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean = mean
        self.std = std
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        """Normalized scores (mean 0 / std 1 on reference-policy answers), one per answer."""
        return [(r - self.mean) / self.std for r in self.raw_scores(prompts, completions)]

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        """The score head's outputs (the model reads the last non-pad token, and every
        rendering ends in a newline after `<|im_end|>`)."""
        scores = [0.0] * len(prompts)
        for batch, input_ids, attention_mask, _ in self._batches(prompts, completions, False):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            for row, i in enumerate(batch):  # logits: (B, 1)
                scores[i] = float(logits[row, 0])
        return scores

    def _batches(
        self, prompts: Sequence[Prompt], completions: Sequence[str], find_answers: bool
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(indices, input_ids, attention_mask, answer_mask) batches grouped by length,
        right-padded, on the model's device; answer_mask marks the answer's tokens (all
        of the sequence unless `find_answers`, which renders each prompt once more)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        rendered = [
            render_with_answer_start(self.tokenizer, p, c, self.max_length)
            if find_answers
            else (render(self.tokenizer, p, c, self.max_length), 0)
            for p, c in zip(prompts, completions, strict=True)
        ]
        order = sorted(range(len(rendered)), key=lambda i: len(rendered[i][0]))
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(rendered[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            answer_mask = torch.zeros((len(batch), width), dtype=torch.bool)  # (B, T)
            for row, i in enumerate(batch):
                ids, answer_start = rendered[i]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
                answer_mask[row, answer_start : len(ids)] = True
            device = self.device
            yield batch, input_ids.to(device), attention_mask.to(device), answer_mask.to(device)

    def cached(self) -> contextlib.AbstractContextManager[None]:
        """Scores in this block may reuse cached features (the linear method's)."""
        return contextlib.nullcontext()

    def save_weights(self, directory: Path) -> None:
        """The trained weights (the adapter with the score head) into `directory`."""
        self.model.save_pretrained(str(directory))


def load_reward_model(
    path: str | Path, *, device: str = "cpu", backbone: str | None = None, batch_size: int = 8
) -> RewardModel:
    """Load a saved reward model; `backbone` overrides the one recorded (a moved base)."""
    path = Path(path)
    try:
        meta = json.loads((path / ARTIFACT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RewardModelError(f"{path} is not a reward model artifact: {exc}") from exc
    tokenizer = load_tokenizer(str(path))
    if meta.get("method", "lora") == "linear":
        from trainer.reward_linear import load_linear_reward_model

        return load_linear_reward_model(
            path, meta, tokenizer, device=device, backbone=backbone, batch_size=batch_size
        )
    base = _load_backbone(backbone or meta["backbone"], tokenizer, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the libraries' own deprecations
        model = PeftModel.from_pretrained(base, str(path)).to(device)
    norm = meta["normalization"]
    return RewardModel(
        model,
        tokenizer,
        mean=norm["mean"],
        std=norm["std"],
        max_length=meta["max_length"],
        batch_size=batch_size,
        name=meta.get("name"),
    )


def latest_reward_model(store: Store, **kwargs: Any) -> RewardModel:
    """The live reward model; `RewardModelError` when none has been trained yet."""
    live = [v for v in store.versions("reward") if v.status == "live"]
    if not live or not live[0].path:
        raise RewardModelError("no live reward model yet: run `rlhf-chat reward train`")
    return load_reward_model(live[0].path, **kwargs)


def _load_backbone(path: str, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> Any:
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    torch.manual_seed(seed)  # the new score head's init
    with suppress_seqcls_warning():  # "score.weight missing": expected, the head is new
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32
        )
    model.config.pad_token_id = tokenizer.pad_token_id  # how the model finds the last token
    return model


# -- evaluation ----------------------------------------------------------------------


def pairwise_metrics(
    chosen: Sequence[float], rejected: Sequence[float], *, n_bins: int = 10
) -> dict[str, float]:
    """Accuracy (ties count half), Brier score and expected calibration error of
    p = sigmoid(r_chosen - r_rejected), the model's probability that the voter's choice wins."""
    n = len(chosen)
    if n == 0:
        return {"n": 0}
    p = [_sigmoid(c - r) for c, r in zip(chosen, rejected, strict=True)]
    accuracy = sum(
        1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)
    )
    brier = sum((1.0 - q) ** 2 for q in p)
    # ECE over the confidence of the predicted winner, max(p, 1 - p), in equal-width bins
    bins: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for q in p:
        confidence, correct = max(q, 1.0 - q), float(q > 0.5)
        bins[min(int((confidence - 0.5) * 2 * n_bins), n_bins - 1)].append((confidence, correct))
    ece = sum(abs(sum(c for c, _ in b) - sum(k for _, k in b)) for b in bins if b)
    return {"n": n, "accuracy": accuracy / n, "brier": brier / n, "ece": ece / n}


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))  # no overflow for very negative x


def evaluate_pairs(model: RewardModel, pairs: Sequence[PreferencePair]) -> dict[str, float]:
    prompts = [p.prompt for p in pairs]
    chosen = model.raw_scores(prompts, [p.chosen for p in pairs])
    rejected = model.raw_scores(prompts, [p.rejected for p in pairs])
    return pairwise_metrics(chosen, rejected)


# -- training ------------------------------------------------------------------------


@dataclass
class RewardOutcome:
    """A trained, saved and promoted reward model."""

    version: str
    path: Path
    run_id: int
    metrics: dict[str, Any]
    report: DataReport
    model: RewardModel


def resolve_backbone(config: RewardConfig, base_model: str, data_dir: Path) -> str:
    if config.backbone == BASE_BACKBONE:
        return base_model
    return resolve_base_model(config.backbone, data_dir)


def train_reward_model(
    store: Store | None,
    config: RewardConfig,
    *,
    data_dir: Path,
    base_model: str,
    progress: Progress | None = None,
) -> RewardOutcome:
    """Build pairs from the store, train, normalize, evaluate, save, register and promote.

    `base_model` is the resolved policy base (a directory or Hub id): the default
    backbone and the reference policy sampled for normalization. Too little data
    raises `TrainingSkipped` after recording the run as skipped; any other error is
    recorded as a failed run and raised.

    Under a multi-process launch (trainer.distributed) only the main process has the
    store (the others pass None): it builds the pairs and hands them over, every
    process trains on its share, and the main one alone saves and records the model,
    which the others then load.
    """
    run_id = distributed.on_main(_start_run, store)
    try:
        data = distributed.on_main(_dataset, store, run_id, config)
        outcome = _train_and_publish(
            store, run_id, data, config, Path(data_dir), base_model, progress
        )
    except TrainingSkipped:
        raise
    except Exception as exc:
        if store is not None:
            store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if store is not None:
        store.finish_run(
            run_id,
            "succeeded",
            n_examples=len(data.train_pairs),
            metrics={**outcome.metrics, "version": outcome.version, "data": asdict(data.report)},
        )
    return outcome


def _start_run(store: Store) -> int:
    return store.start_run("reward").id


def _dataset(store: Store, run_id: int, config: RewardConfig) -> FeedbackDataset:
    data = build_dataset(
        store,
        heldout_fraction=config.heldout_fraction,
        max_user_share=config.max_user_weight_share,
        seed=config.seed,
    )
    _skip_if_too_little(store, run_id, data.report, config)
    return data


def _train_and_publish(
    store: Store | None,
    run_id: int,
    data: FeedbackDataset,
    config: RewardConfig,
    data_dir: Path,
    base_model: str,
    progress: Progress | None,
) -> RewardOutcome:
    backbone = distributed.on_main(resolve_backbone, config, base_model, data_dir)
    tokenizer = load_tokenizer(backbone)
    started = time.perf_counter()
    callback = _TrainingLog(store, run_id, progress)
    workdir = data_dir / "runs" / str(run_id)
    reward_model: RewardModel
    if config.method == "linear":
        from trainer.reward_linear import fit_linear_reward_model

        reward_model, train_stats = fit_linear_reward_model(
            backbone,
            tokenizer,
            data.train_pairs,
            config,
            progress,
            labels=data.train_unpaired,
            cache_dir=data_dir / "reward" / FEATURES_DIR,
        )
    else:  # TRL's trainer takes no per-example weights: weighted-down users keep fewer
        pairs = weighted_subsample(data.train_pairs, seed=config.seed)
        model, train_stats = _fit(backbone, tokenizer, pairs, config, workdir, callback)
        reward_model = RewardModel(
            model, tokenizer, max_length=config.max_length, batch_size=config.score_batch_size
        )
    seconds = time.perf_counter() - started
    name, path, metrics = distributed.on_main(
        _publish,
        store,
        run_id,
        reward_model,
        data,
        config,
        data_dir,
        backbone,
        base_model,
        train_stats,
        seconds,
    )
    if store is None:  # the other processes score with exactly the model that was saved
        reward_model = load_reward_model(
            path, device=config.device, batch_size=config.score_batch_size
        )
    return RewardOutcome(name, path, run_id, metrics, data.report, reward_model)


def _publish(
    store: Store,
    run_id: int,
    reward_model: RewardModel,
    data: FeedbackDataset,
    config: RewardConfig,
    data_dir: Path,
    backbone: str,
    base_model: str,
    train_stats: dict[str, float],
    seconds: float,
) -> tuple[str, Path, dict[str, Any]]:
    """Normalize, evaluate, save, register and promote: the main process's part.
    -> (version name, artifact path, metrics)"""
    name = f"reward-{run_id}"
    normalization = _normalization(reward_model, data, config, base_model)
    reward_model.mean, reward_model.std = normalization["mean"], normalization["std"]
    with reward_model.cached():
        heldout = evaluate_pairs(reward_model, data.heldout_pairs)
    metrics = {
        **{f"heldout_{k}": v for k, v in heldout.items()},
        **train_stats,
        "train_pairs": len(data.train_pairs),
        "train_seconds": seconds,
        "seconds_per_pair_epoch": seconds / (len(data.train_pairs) * config.epochs),
        "norm_mean": normalization["mean"],
        "norm_std": normalization["std"],
    }
    final = {k: v for k, v in metrics.items() if k.startswith("heldout_") and k != "heldout_n"}
    store.log_metrics(run_id, int(train_stats["train_steps"]), final)
    path = _save(reward_model, name, data_dir, backbone, normalization, metrics, data, config)
    store.add_version("reward", name, path=str(path), sha256=_sha256(path), metrics=metrics)
    store.promote(name)
    reward_model.name = name
    log.info("%s is live: %s", name, json.dumps(metrics))
    return name, path, metrics


def _skip_if_too_little(
    store: Store, run_id: int, report: DataReport, config: RewardConfig
) -> None:
    have = report.n_pairs
    if have >= config.min_pairs and report.train_pairs > 0:
        return
    if have >= config.min_pairs:
        message = f"reward model not trained: all {have} pairs fell in the held-out split"
    else:
        message = (
            f"reward model not trained: {have} preference pairs, {config.min_pairs} needed "
            f"(reward.min_pairs): {config.min_pairs - have} more decisive judgments (a "
            "battle won by A or B, a correction, or a thumb up and a thumb down on answers "
            "to the same prompt)"
        )
    message += f". {report.summary()}"
    store.finish_run(
        run_id, "skipped", n_examples=have, metrics={"data": asdict(report)}, error=message
    )
    raise TrainingSkipped(message, needed=config.min_pairs, have=have)


class _TrainingLog(TrainerCallback):
    """Forwards the trainer's logs to `run_metrics` and its steps to a progress callback."""

    KEYS = ("loss", "accuracy", "margin", "learning_rate", "grad_norm")

    def __init__(self, store: Store | None, run_id: int, progress: Progress | None) -> None:
        self.store, self.run_id, self.progress = store, run_id, progress  # no store: a follower

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        values = {k: v for k, v in (logs or {}).items() if k in self.KEYS and v is not None}
        if values and self.store is not None:
            self.store.log_metrics(self.run_id, state.global_step, values)


def _fit(
    backbone: str,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    config: RewardConfig,
    workdir: Path,
    callback: TrainerCallback,
) -> tuple[Any, dict[str, float]]:
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    train = Dataset.from_dict(
        {
            "chosen_ids": [render(tokenizer, p.prompt, p.chosen, config.max_length) for p in pairs],
            "rejected_ids": [
                render(tokenizer, p.prompt, p.rejected, config.max_length) for p in pairs
            ],
        }
    )
    args = TRLRewardConfig(
        output_dir=str(workdir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_length=None,  # already cut by `render`, from the left
        activation_checkpointing=False,  # TRL turns it on by default; these models are small
        bf16=False,
        fp16=False,
        use_cpu=config.device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    backbone_model = _load_backbone(backbone, tokenizer, seed=config.seed)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        layers_to_transform=top_layers(backbone_model.config, config.lora_layers),
        modules_to_save=["score"],  # the head is new: train all of it
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the libraries' own deprecations
        trainer = RewardTrainer(
            model=backbone_model,
            args=args,
            train_dataset=train,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # logs go to run_metrics, not stdout
        result = trainer.train()
    model: Any = trainer.model
    model = model.to(torch.device(config.device)).eval()
    return model, {"train_loss": float(result.training_loss), "train_steps": result.global_step}


def top_layers(model_config: Any, n: int) -> list[int] | None:
    """The indices of the last `n` decoder layers (None: all of them). LoRA only there
    means the backward pass stops at the first of them instead of running through the
    whole network: on a 30-layer backbone, the top 8 take about half the time."""
    total = model_config.num_hidden_layers
    if n <= 0 or n >= total:
        return None
    return list(range(total - n, total))


# -- normalization -------------------------------------------------------------------


def _normalization(
    model: RewardModel, data: FeedbackDataset, config: RewardConfig, base_model: str
) -> dict[str, Any]:
    prompts = _distinct_prompts(data.train_pairs, seed=config.seed)
    if config.normalize_on == "base_samples":
        prompts = [prompts[i % len(prompts)] for i in range(config.normalize_samples)]
        answers = sample_reference_answers(
            base_model,
            prompts,
            max_new_tokens=config.normalize_max_new_tokens,
            temperature=config.normalize_temperature,
            seed=config.seed,
            device=config.device,
        )
    else:
        rng = random.Random(config.seed)
        pool = [(p.prompt, a) for p in data.train_pairs for a in (p.chosen, p.rejected)]
        picked = rng.sample(pool, min(len(pool), config.normalize_samples))
        prompts, answers = [p for p, _ in picked], [a for _, a in picked]
    scores = model.raw_scores(prompts, answers)
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1))
    return {
        "mean": mean,
        "std": std if std > 1e-6 else 1.0,
        "n": len(scores),
        "source": config.normalize_on,
    }


def prompt_key(prompt: Prompt) -> str:
    """A string that is equal for equal prompts (a dict key for a list of messages)."""
    return prompt if isinstance(prompt, str) else json.dumps(list(prompt), sort_keys=True)


def _distinct_prompts(pairs: Sequence[PreferencePair], *, seed: int) -> list[list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        seen.setdefault(prompt_key(p.prompt), p.prompt)
    prompts = list(seen.values())
    random.Random(seed).shuffle(prompts)
    return prompts


@torch.no_grad()
def sample_reference_answers(
    base_model: str,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    device: str = "cpu",
    batch_size: int = 8,
) -> list[str]:
    """One sampled answer of the base model (adapter-free) per prompt, left-padded batches."""
    tokenizer = load_tokenizer(base_model)
    model = load_causal_lm(base_model, device=device)
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = [
            chat_prompt_ids(tokenizer, as_messages(p)) for p in prompts[start : start + batch_size]
        ]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)  # (B, T)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )  # (B, T + new)
        for row in out[:, width:]:
            answers.append(str(tokenizer.decode(row, skip_special_tokens=True)).strip())
    return answers


# -- artifact ------------------------------------------------------------------------


def _save(
    model: RewardModel,
    name: str,
    data_dir: Path,
    backbone: str,
    normalization: dict[str, Any],
    metrics: dict[str, Any],
    data: FeedbackDataset,
    config: RewardConfig,
) -> Path:
    """Write the artifact to a temporary sibling, then rename it into place."""
    final = data_dir / "reward" / name
    if final.exists():
        raise RewardModelError(f"{final} already exists; refusing to overwrite a reward model")
    tmp = final.with_name(f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save_weights(tmp)
        model.tokenizer.save_pretrained(str(tmp))
        backbone_path = Path(backbone)
        meta = {
            "name": name,
            "method": config.method,
            "backbone": str(backbone_path.resolve()) if backbone_path.exists() else backbone,
            "max_length": config.max_length,
            "normalization": normalization,
            "metrics": metrics,
            "config": asdict(config),
            "data": asdict(data.report),
        }
        (tmp / ARTIFACT_FILE).write_text(json.dumps(meta, indent=2))
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted([*path.glob("adapter_model.*"), *path.glob("linear_head.*")]):
        digest.update(file.read_bytes())
    return digest.hexdigest()
