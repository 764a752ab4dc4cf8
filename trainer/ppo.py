"""LoRA PPO: our own actor–critic trainer for the policy, on torch + peft.

    build_policy(base_model, config, adapter_dir=None) -> (Policy, tokenizer)
    run_ppo(policy, tokenizer, prompts, reward_fn, config, ...) -> PPOResult
    load_reward_function("module:func") -> RewardFunction

One round, in the spirit of cleanrl's ppo.py:
1. rollout: one completion per prompt (left-padded prompts, `top_k=0, top_p=1` at the
   configured temperature), cut after the first EOS *of the completion*. SmolLM2's pad
   id is its EOS id and `<|im_end|>` sits inside every chat prompt, so lengths are
   tracked explicitly, never found by looking for pad tokens;
2. score: the reward function on the texts (a completion without EOS gets the fixed
   `no_eos_penalty` score instead); logprobs of the sampling policy and of the reference
   (the same model with its adapter disabled) from logits divided by the temperature;
   values from a zero-initialised head on the last hidden state; per-token reward
   `-beta * (logp - ref_logp)` plus the score on the last completion token; GAE, its
   advantages whitened over the whole rollout;
3. train: `ppo_epochs` passes over shuffled minibatches, clipped policy and value
   losses, grad-norm clip, Adam (eps 1e-5).
Beta follows the adaptive KL controller of Ziegler et al. 2019. Dropout is off
everywhere, so the first minibatch of a round sees a ratio of exactly 1.

Under a multi-process launch (trainer.distributed) each process runs rounds on its own
share of the prompts, the update averages gradients over the processes, and the
round's statistics, beta's input among them, are means over all of them.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from trainer import distributed
from trainer.losses import (
    PolicyLoss,
    ValueLoss,
    compute_gae,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from trainer.models import chat_prompt_ids, load_causal_lm, load_tokenizer
from trainer.ppo_config import PPOConfig

if TYPE_CHECKING:
    from storage import Store

log = logging.getLogger(__name__)

Prompt = str | Sequence[dict[str, Any]]
RewardFunction = Callable[[list[Any], list[str]], Sequence[float]]
"""(prompts, completions) -> one score per completion. Prompts arrive as given to
`run_ppo`: a string, or `{"role", "content"}` messages (prompts from the store)."""

VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "ppo_state.json"
ADAM_EPS = 1e-5


class PPOError(RuntimeError):
    """PPO cannot run: no usable prompts, or a reward function that misbehaves."""


# -- the policy: actor (causal LM + LoRA) and critic (value head) ----------------------


class Policy(nn.Module):
    """A causal LM with a LoRA adapter (the actor) and a value head on its last hidden
    state (the critic). The reference is the same model inside `reference()`."""

    def __init__(self, model: PeftModel, kl_coef: float | None = None) -> None:
        super().__init__()
        self.model = model
        lm: Any = model.get_base_model()
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.kl_coef = kl_coef  # beta carried over from the adapter it was warm-started from

    def forward(
        self,
        query_responses: Tensor,  # (B, P+R)
        attention_mask: Tensor,  # (B, P+R)
        n_response: int,
        *,
        with_values: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits predicting each completion token (B, R, V) and the value before it (B, R)."""
        lm: Any = self.model.get_base_model()
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P+R)
        hidden = lm.get_decoder()(
            input_ids=query_responses,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state  # (B, P+R, H)
        hidden = hidden[:, -n_response - 1 : -1]  # (B, R, H): the states that emit each token
        logits = lm.get_output_embeddings()(hidden)  # (B, R, V)
        values = self.value_head(hidden.float()).squeeze(-1) if with_values else None  # (B, R)
        return logits, values

    def reference(self) -> Any:
        """Context in which the model is the base model: the adapter disabled."""
        return self.model.disable_adapter()

    def save(self, output_dir: str | Path, *, kl_coef: float | None = None) -> Path:
        """The adapter (peft `save_pretrained`), the value head and beta, into `output_dir`."""
        output_dir = Path(output_dir)
        self.model.save_pretrained(str(output_dir))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
            str(output_dir / VALUE_HEAD_FILE),
        )
        beta = kl_coef if kl_coef is not None else self.kl_coef
        (output_dir / STATE_FILE).write_text(json.dumps({"kl_coef": beta}))
        return output_dir


def build_policy(
    base_model: str | Path,
    config: PPOConfig,
    *,
    adapter_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Policy, PreTrainedTokenizerBase]:
    """The base checkpoint with the adapter in `adapter_dir` (warm start, trainable) or
    a fresh LoRA; its value head and beta too when the adapter directory holds them."""
    tokenizer = load_tokenizer(str(base_model))
    model = load_causal_lm(str(base_model), device=config.device, dtype=dtype)
    torch.manual_seed(config.seed)  # a fresh adapter's A matrices
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    else:
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(config.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    disable_dropout(model)
    policy = Policy(model)
    if adapter_dir is not None:
        _load_critic(policy, Path(adapter_dir))
    policy.to(config.device).eval()
    return policy, tokenizer


def _load_critic(policy: Policy, adapter_dir: Path) -> None:
    if (adapter_dir / VALUE_HEAD_FILE).exists():
        policy.value_head.load_state_dict(load_file(str(adapter_dir / VALUE_HEAD_FILE)))
    if (adapter_dir / STATE_FILE).exists():
        policy.kl_coef = json.loads((adapter_dir / STATE_FILE).read_text()).get("kl_coef")


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere (LoRA's and attention's too): sampling and training passes
    must compute the same function."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # type: ignore[assignment]


# -- prompts and rewards -------------------------------------------------------------


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A prompt as chat messages: a string is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_tokens: int
) -> list[int] | None:
    """Chat-rendered ids ready for an answer; the oldest turns are dropped until they fit
    in `max_tokens` (a system turn stays). None when even the last turn is too long."""
    messages = as_messages(prompt)
    while True:
        ids = chat_prompt_ids(tokenizer, messages)
        if len(ids) <= max_tokens:
            return ids
        oldest = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if oldest is None:
            return None
        del messages[oldest]


def load_reward_function(spec: str) -> RewardFunction:
    """Import `module:func` (a dotted attribute after the colon works too)."""
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"a reward function is given as MODULE:FUNC, not {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for the reward function: {exc}") from exc
    except AttributeError as exc:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise ValueError(f"{spec} is not callable")
    return obj


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a file: one per line, or in `.jsonl`/`.json` one JSON value per line
    (a string, `{"prompt": str}`, `{"messages": [...]}` or a list of messages)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix not in (".jsonl", ".json"):
        return list[Prompt](lines)
    prompts: list[Prompt] = []
    for n, line in enumerate(lines, 1):
        value = json.loads(line)
        if isinstance(value, dict):
            value = value.get("messages") or value.get("prompt")
        if not (isinstance(value, str) or isinstance(value, list)) or not value:
            raise ValueError(f"{path}:{n}: expected a string, a prompt or a list of messages")
        prompts.append(value)
    return prompts


def call_reward(reward_fn: RewardFunction, prompts: list[Any], completions: list[str]) -> Tensor:
    scores = [float(s) for s in reward_fn(list(prompts), list(completions))]
    if len(scores) != len(completions):
        raise PPOError(f"the reward function gave {len(scores)} scores for {len(completions)}")
    if not all(math.isfinite(s) for s in scores):
        raise PPOError(f"the reward function gave a score that is not finite: {scores}")
    return torch.tensor(scores)  # (B,)


# -- rollouts --------------------------------------------------------------------------


@dataclass
class Rollout:
    """Completions sampled for a batch of prompts. P prompt width, R completion width."""

    prompts: list[Any]
    query_responses: Tensor  # (B, P+R) left-padded prompt ids, then the completion ids
    attention_mask: Tensor  # (B, P+R) 1 on prompt tokens and kept completion tokens
    response_mask: Tensor  # (B, R) float, 1 up to and including the completion's first EOS
    lengths: Tensor  # (B,) completion tokens kept (EOS included)
    has_eos: Tensor  # (B,) bool
    completions: list[str]  # the kept text, EOS and special tokens left out

    @property
    def n_response(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> Tensor:  # (B, R)
        return self.query_responses[:, -self.n_response :]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Ids and attention mask, padded on the left to the longest. -> (B, P), (B, P)"""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def first_eos_lengths(responses: Tensor, eos_id: int) -> tuple[Tensor, Tensor]:
    """Kept length (up to and including the first EOS) and whether there is one.
    (B, R) -> (B,), (B,)"""
    is_eos = responses == eos_id  # (B, R)
    has_eos = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1)  # index of the first True (0 when none)
    lengths = torch.where(has_eos, first + 1, torch.full_like(first, responses.shape[1]))
    return lengths, has_eos


@torch.no_grad()
def generate_rollout(
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Any],
    ids: Sequence[list[int]],
    config: PPOConfig,
    *,
    seed: int | None = None,
    max_new_tokens: int | None = None,
) -> Rollout:
    """Sample one completion per prompt and cut each after its first EOS. With a `seed`,
    each generate call starts from `seed + its first row`, so two policies sampled with
    the same seed draw the same random numbers batch by batch (the gate pairs them)."""
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens or config.max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=config.generation_cache,
    )
    step = config.generation_batch_size if config.batched_generation else 1
    pieces: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, len(ids), step):
        input_ids, mask = left_pad(ids[start : start + step], pad_id)
        if seed is not None:
            torch.manual_seed(seed + start)
        out = policy.model.generate(
            input_ids=input_ids.to(config.device),
            attention_mask=mask.to(config.device),
            generation_config=gen_config,
        )
        responses = out[:, input_ids.shape[1] :].cpu()  # (b, r)
        lengths, has_eos = first_eos_lengths(responses, eos_id)
        pieces.append((responses, lengths, has_eos))
    return assemble_rollout(tokenizer, prompts, ids, pieces)


def assemble_rollout(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Any],
    ids: Sequence[list[int]],
    pieces: list[tuple[Tensor, Tensor, Tensor]],
) -> Rollout:
    """One padded batch from the generate calls' pieces; padding after each end."""
    pad_id = tokenizer.pad_token_id
    lengths = torch.cat([p[1] for p in pieces])  # (B,)
    has_eos = torch.cat([p[2] for p in pieces])  # (B,)
    R = int(lengths.max())
    responses = torch.full((len(ids), R), pad_id, dtype=torch.long)  # (B, R)
    row = 0
    for piece, piece_lengths, _ in pieces:
        for r, n in zip(piece, piece_lengths.tolist(), strict=True):
            responses[row, :n] = r[:n]
            row += 1
    response_mask = (torch.arange(R)[None, :] < lengths[:, None]).long()  # (B, R)
    query, query_mask = left_pad(ids, pad_id)  # (B, P)
    completions = [
        str(tokenizer.decode(r[: n - int(e)], skip_special_tokens=True))
        for r, n, e in zip(responses, lengths.tolist(), has_eos.tolist(), strict=True)
    ]
    return Rollout(
        prompts=list(prompts),
        query_responses=torch.cat([query, responses], dim=1),
        attention_mask=torch.cat([query_mask, response_mask], dim=1),
        response_mask=response_mask.float(),
        lengths=lengths,
        has_eos=has_eos,
        completions=completions,
    )


# -- scoring -------------------------------------------------------------------------


@dataclass
class Experience:
    """A scored rollout: everything a PPO update reads, on the training device."""

    query_responses: Tensor  # (B, P+R)
    attention_mask: Tensor  # (B, P+R)
    response_mask: Tensor  # (B, R)
    logprobs: Tensor  # (B, R) under the sampling policy
    ref_logprobs: Tensor  # (B, R) under the base model
    values: Tensor  # (B, R)
    rewards: Tensor  # (B, R) -beta*KL per token, plus the score on the last kept token
    advantages: Tensor  # (B, R)
    returns: Tensor  # (B, R)


@torch.no_grad()
def sequence_logprobs(
    policy: Policy, rollout: Rollout, config: PPOConfig, *, with_values: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Policy logprobs, ref logprobs, values and entropy of the completion tokens, in
    minibatch-sized passes (or one sequence at a time). -> 4 x (B, R)"""
    qr = rollout.query_responses.to(config.device)
    mask = rollout.attention_mask.to(config.device)
    R, B = rollout.n_response, qr.shape[0]
    step = config.minibatch_size if config.batched_scoring else 1
    out: list[tuple[Tensor, ...]] = []
    for start in range(0, B, step):
        rows = slice(start, start + step)
        logits, values = policy(qr[rows], mask[rows], R, with_values=with_values)
        logits = logits.float() / config.temperature  # (b, R, V)
        logprobs = logprobs_from_logits(logits, qr[rows, -R:])
        entropy = entropy_from_logits(logits)
        with policy.reference():
            ref_logits, _ = policy(qr[rows], mask[rows], R, with_values=False)
        ref_logprobs = logprobs_from_logits(ref_logits.float() / config.temperature, qr[rows, -R:])
        values = values if values is not None else torch.zeros_like(logprobs)
        out.append((logprobs, ref_logprobs, values, entropy))
    logprobs, ref_logprobs, values, entropy = (torch.cat(t) for t in zip(*out, strict=True))
    return logprobs, ref_logprobs, values, entropy


def score_rollout(
    rollout: Rollout,
    scores: Tensor,  # (B,) after the no-EOS penalty
    logprobs: Tensor,  # (B, R)
    ref_logprobs: Tensor,  # (B, R)
    values: Tensor,  # (B, R)
    beta: float,
    config: PPOConfig,
) -> Experience:
    """Per-token rewards (KL penalty, score on the last kept token) and GAE."""
    mask = rollout.response_mask.to(logprobs.device)  # (B, R)
    B = mask.shape[0]
    rewards = -beta * kl_k1(logprobs, ref_logprobs) * mask  # (B, R)
    last = (rollout.lengths - 1).to(logprobs.device)  # the EOS index, or R-1 without EOS
    rewards[torch.arange(B, device=mask.device), last] += scores.to(mask.device)
    advantages, returns = compute_gae(rewards, values * mask, mask, config.gamma, config.lam)
    # whitened once over the whole rollout, so a minibatch whose answers all scored well
    # still pushes them up rather than being re-centred on its own mean
    advantages = masked_whiten(advantages, mask)
    return Experience(
        query_responses=rollout.query_responses.to(config.device),
        attention_mask=rollout.attention_mask.to(config.device),
        response_mask=mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values * mask,
        rewards=rewards,
        advantages=advantages,
        returns=returns,
    )


def apply_no_eos_penalty(raw_scores: Tensor, has_eos: Tensor, config: PPOConfig) -> Tensor:
    """A completion that never ended gets the fixed penalty score. (B,) -> (B,)"""
    if config.no_eos_penalty is None:
        return raw_scores
    return torch.where(has_eos, raw_scores, torch.full_like(raw_scores, config.no_eos_penalty))


class AdaptiveKLController:
    """Ziegler et al. 2019 (arXiv:1909.08593), section 2.2:
    beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon. Fixed without a target."""

    def __init__(self, init_kl_coef: float, target: float | None, horizon: int) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


# -- the update ----------------------------------------------------------------------


def ppo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    exp: Experience,
    config: PPOConfig,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """`ppo_epochs` passes over shuffled minibatches; one stats dict per minibatch.
    `policy` is the Policy, or its data-parallel wrapper under a multi-process launch."""
    params = [p for p in policy.parameters() if p.requires_grad]
    B = exp.response_mask.shape[0]
    stats = []
    for _epoch in range(config.ppo_epochs):
        b_inds = torch.randperm(B, generator=generator)
        for start in range(0, B, config.minibatch_size):
            mb_inds = b_inds[start : start + config.minibatch_size].to(exp.response_mask.device)
            loss, mb_stats = minibatch_loss(policy, exp, mb_inds, config)
            optimizer.zero_grad()
            loss.backward()
            mb_stats["grad_norm"] = nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
            optimizer.step()
            stats.append(mb_stats)
    return stats


def minibatch_loss(
    policy: nn.Module, exp: Experience, mb_inds: Tensor, config: PPOConfig
) -> tuple[Tensor, dict[str, float]]:
    """Clipped policy loss + vf_coef * clipped value loss on one minibatch, with its stats."""
    R = exp.response_mask.shape[1]
    mb_mask = exp.response_mask[mb_inds]  # (mb, R)
    logits, newvalues = policy(exp.query_responses[mb_inds], exp.attention_mask[mb_inds], R)
    newlogprobs = logprobs_from_logits(
        logits.float() / config.temperature, exp.query_responses[mb_inds, -R:]
    )  # (mb, R)
    mb_advantages = exp.advantages[mb_inds]  # (mb, R), whitened over the rollout
    pg_loss, pg_clipfrac, approx_kl = PolicyLoss(config.cliprange)(
        newlogprobs, exp.logprobs[mb_inds], mb_advantages, mb_mask
    )
    v_loss, vf_clipfrac = ValueLoss(config.cliprange_value)(
        newvalues, exp.values[mb_inds], exp.returns[mb_inds], mb_mask
    )
    ratio = torch.exp(newlogprobs.detach() - exp.logprobs[mb_inds])  # (mb, R)
    stats = {
        "policy_loss": pg_loss.item(),
        "value_loss": v_loss.item(),
        "clipfrac": pg_clipfrac.item(),
        "value_clipfrac": vf_clipfrac.item(),
        "approx_kl": approx_kl.item(),
        "ratio_max_dev": ((ratio - 1).abs() * mb_mask).max().item(),
    }
    return pg_loss + config.vf_coef * v_loss, stats


# -- rounds and runs -----------------------------------------------------------------


@dataclass
class RoundStats:
    """What one PPO round did; `metrics()` is what goes into the store."""

    round: int
    reward: float  # mean score, no-EOS penalty included
    raw_reward: float  # mean of the reward function's own scores
    non_score_reward: float  # mean over completions of the summed -beta*KL
    kl: float  # mean over completions of the summed log p - log p_ref (k1)
    kl_k3: float  # the same with the k3 estimator
    beta: float  # the KL coefficient this round used
    entropy: float  # mean per completion token, at the sampling temperature
    policy_loss: float
    value_loss: float
    clipfrac: float
    value_clipfrac: float
    approx_kl: float
    response_length: float
    no_eos_rate: float
    generation_s: float
    scoring_s: float
    training_s: float
    minibatches: list[dict[str, float]] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float]:
        values = asdict(self)
        del values["round"], values["minibatches"]
        return values

    def summary(self) -> str:
        return (
            f"round {self.round}: reward {self.reward:+.3f} kl {self.kl:.3f} beta {self.beta:.3f}"
            f" entropy {self.entropy:.2f} clipfrac {self.clipfrac:.3f} approx_kl"
            f" {self.approx_kl:.4f} length {self.response_length:.1f} no_eos"
            f" {self.no_eos_rate:.0%} ({self.generation_s:.0f}s gen, {self.scoring_s:.0f}s score,"
            f" {self.training_s:.0f}s train)"
        )


@dataclass
class PPOResult:
    rounds: list[RoundStats]
    kl_coef: float  # beta after the last round
    adapter_dir: Path | None = None
    run_id: int | None = None

    @property
    def final(self) -> RoundStats:
        return self.rounds[-1]


def ppo_round(
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    batch: Sequence[tuple[Any, list[int]]],
    reward_fn: RewardFunction,
    kl_ctl: AdaptiveKLController,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: PPOConfig,
    round_index: int,
    trainable: nn.Module | None = None,
) -> RoundStats:
    """Rollout, scoring, update; then beta moves towards the KL target. Under a
    multi-process launch `batch` is this process's share, `trainable` the data-parallel
    wrapper the update runs through, and the statistics are means over all processes."""
    t0 = _clock(config)
    rollout = generate_rollout(
        policy, tokenizer, [p for p, _ in batch], [i for _, i in batch], config
    )
    t1 = _clock(config)
    raw_scores = call_reward(reward_fn, rollout.prompts, rollout.completions)
    scores = apply_no_eos_penalty(raw_scores, rollout.has_eos, config)
    logprobs, ref_logprobs, values, entropy = sequence_logprobs(policy, rollout, config)
    beta = kl_ctl.value
    exp = score_rollout(rollout, scores, logprobs, ref_logprobs, values, beta, config)
    t2 = _clock(config)
    minibatches = ppo_update(trainable or policy, optimizer, exp, config, generator)
    t3 = _clock(config)
    mask = exp.response_mask
    means = distributed.mean_across(  # every process must move beta by the same KL
        {
            "reward": scores.mean().item(),
            "raw_reward": raw_scores.mean().item(),
            "kl": (kl_k1(logprobs, ref_logprobs) * mask).sum(1).mean().item(),
            "kl_k3": (kl_k3(logprobs, ref_logprobs) * mask).sum(1).mean().item(),
            "entropy": masked_mean(entropy, mask).item(),
            **{k: _mean(minibatches, k) for k in _UPDATE_KEYS},
            "response_length": rollout.lengths.float().mean().item(),
            "no_eos_rate": 1.0 - rollout.has_eos.float().mean().item(),
        }
    )
    kl_ctl.update(means["kl"], n_steps=len(batch) * distributed.world_size())
    return RoundStats(
        round=round_index,
        non_score_reward=-beta * means["kl"],
        beta=beta,
        **means,
        generation_s=t1 - t0,
        scoring_s=t2 - t1,
        training_s=t3 - t2,
        minibatches=minibatches,
    )


_UPDATE_KEYS = ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl")


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def _clock(config: PPOConfig) -> float:
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], config: PPOConfig
) -> list[tuple[Prompt, list[int]]]:
    """(prompt, ids) for every prompt that fits `max_prompt_tokens`; the rest are skipped."""
    encoded = []
    for prompt in prompts:
        ids = prompt_ids(tokenizer, prompt, config.max_prompt_tokens)
        if ids is None:
            log.info(
                "skipping a prompt longer than ppo.max_prompt_tokens=%d", config.max_prompt_tokens
            )
            continue
        encoded.append((prompt, ids))
    return encoded


def _prompt_stream(n: int, seed: int) -> Iterator[int]:
    """Indices of a shuffled pass over the prompts, reshuffled after each pass, forever."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        yield from order


def run_ppo(
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    reward_fn: RewardFunction,
    config: PPOConfig,
    *,
    store: Store | None = None,
    run_id: int | None = None,
    progress: Callable[[RoundStats], None] | None = None,
    output_dir: str | Path | None = None,
) -> PPOResult:
    """`config.rounds` PPO rounds on `prompts`; the adapter goes to `output_dir` if given.

    With a store, each round's metrics are logged under `run_id`; without a `run_id` a
    `ppo` run is started here and finished as succeeded or failed.
    """
    if store is not None and run_id is None:
        run_id = store.start_run("ppo").id
        return run_recorded(
            store,
            run_id,
            policy,
            tokenizer,
            prompts,
            reward_fn,
            config,
            progress=progress,
            output_dir=output_dir,
        )
    result = _train(policy, tokenizer, prompts, reward_fn, config, store, run_id, progress)
    result.run_id = run_id
    if output_dir is not None:
        result.adapter_dir = policy.save(output_dir, kl_coef=result.kl_coef)
    return result


def run_recorded(
    store: Store,
    run_id: int,
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    reward_fn: RewardFunction,
    config: PPOConfig,
    *,
    progress: Callable[[RoundStats], None] | None = None,
    output_dir: str | Path | None = None,
    metrics: dict[str, Any] | None = None,
) -> PPOResult:
    """`run_ppo` under the started `ppo` run `run_id`, finished as failed if it raises,
    else as succeeded with the last round's metrics and `metrics`."""
    try:
        result = run_ppo(
            policy,
            tokenizer,
            prompts,
            reward_fn,
            config,
            store=store,
            run_id=run_id,
            progress=progress,
            output_dir=output_dir,
        )
    except BaseException as exc:
        store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    n_examples = config.rounds * config.rollout_batch_size * distributed.world_size()
    store.finish_run(
        run_id,
        "succeeded",
        n_examples=n_examples,
        metrics={**result.final.metrics(), **(metrics or {})},
    )
    return result


def _train(
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    reward_fn: RewardFunction,
    config: PPOConfig,
    store: Store | None,
    run_id: int | None,
    progress: Callable[[RoundStats], None] | None,
) -> PPOResult:
    encoded = encode_prompts(tokenizer, prompts, config)
    if not encoded:
        raise PPOError(f"no usable prompts ({len(prompts)} given, none fits ppo.max_prompt_tokens)")
    processes, index = distributed.world_size(), distributed.rank()
    if len(encoded) < processes:
        raise PPOError(f"{len(encoded)} usable prompts for {processes} processes; need one each")
    encoded = distributed.shard(encoded, index, processes)
    if processes > 1:
        log.info("process %d of %d: %d prompts in its share", index, processes, len(encoded))
    seed = config.seed + index  # own samples per process; rank 0 draws what one process would
    torch.manual_seed(seed)
    order = _prompt_stream(len(encoded), seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=ADAM_EPS)
    trainable = distributed.data_parallel(policy)
    beta = policy.kl_coef if policy.kl_coef is not None else config.init_kl_coef
    kl_ctl = AdaptiveKLController(beta, config.target_kl, config.horizon)
    rounds = []
    for round_index in range(1, config.rounds + 1):
        batch = [encoded[next(order)] for _ in range(config.rollout_batch_size)]
        stats = ppo_round(
            policy,
            tokenizer,
            batch,
            reward_fn,
            kl_ctl,
            optimizer,
            generator,
            config,
            round_index,
            trainable,
        )
        rounds.append(stats)
        if store is not None and run_id is not None:
            store.log_metrics(run_id, round_index, stats.metrics())
        if progress is not None:
            progress(stats)
    distributed.check_in_sync(policy, kl_ctl.value)
    policy.kl_coef = kl_ctl.value
    return PPOResult(rounds=rounds, kl_coef=kl_ctl.value)
