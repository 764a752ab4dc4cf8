"""Answers of stored model versions to the held-out prompts, judged by the oracle.

The versions are loaded in this process from the data directory (the base checkpoint
plus each version's LoRA adapter), so the measurement neither needs nor disturbs the
server. Every version answers the same prompts with the same sampling seed (common
random numbers); the base model also answers once more with another seed, as the
reference every version is compared against (so base against base shows the noise
floor, a win rate near 0.5).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from trainer.losses import kl_k1
from trainer.ppo import build_policy, encode_prompts, generate_rollout, sequence_logprobs
from trainer.ppo_config import PPOConfig

Oracle = Callable[[str, str], float]


@dataclass
class Answers:
    """One sampled answer per (sample, prompt); answer i is to `prompts[i % n_prompts]`."""

    version: str
    prompts: list[str]  # (N,) the prompt of each answer
    texts: list[str]  # (N,)
    lengths: list[int]  # (N,) completion tokens, EOS included
    has_eos: list[bool]  # (N,) False: cut at the token limit
    kl: list[float]  # (N,) nats per answer against the base model
    n_prompts: int

    def by_prompt(self, values: Sequence[float]) -> list[list[float]]:
        """`values` (one per answer) grouped by prompt: (n_prompts, samples)."""
        return [list(values[i :: self.n_prompts]) for i in range(self.n_prompts)]


def eval_config(ppo: PPOConfig, *, temperature: float, max_new_tokens: int) -> PPOConfig:
    """The trainer's PPO settings (device, batch sizes), sampling as the server does."""
    return replace(ppo, temperature=temperature, max_new_tokens=max_new_tokens)


def usable_prompts(base_model: str, prompts: Sequence[str], config: PPOConfig) -> list[str]:
    """The prompts short enough to answer (the same set for every version)."""
    from trainer.models import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    return [str(p) for p, _ in encode_prompts(tokenizer, list(prompts), config)]


@torch.no_grad()
def sample_answers(
    base_model: str,
    version: str,
    adapter_dir: str | None,
    prompts: Sequence[str],
    config: PPOConfig,
    *,
    samples: int = 1,
    seed: int = 0,
) -> Answers:
    """`samples` answers per prompt from the base model plus `adapter_dir` (None: the
    base model itself), with each answer's KL to the base model."""
    policy, tokenizer = build_policy(base_model, config, adapter_dir=adapter_dir)
    encoded = encode_prompts(tokenizer, list(prompts), config)
    if len(encoded) != len(prompts):
        raise ValueError("pass usable_prompts(): some prompts are too long to answer")
    asked = [str(p) for p, _ in encoded] * samples
    ids = [i for _, i in encoded] * samples
    torch.manual_seed(seed)
    rollout = generate_rollout(policy, tokenizer, asked, ids, config)
    logprobs, ref_logprobs, _, _ = sequence_logprobs(policy, rollout, config, with_values=False)
    mask = rollout.response_mask.to(logprobs.device)  # (N, R)
    kl = (kl_k1(logprobs, ref_logprobs) * mask).sum(1)  # (N,)
    answers = Answers(
        version=version,
        prompts=asked,
        texts=list(rollout.completions),
        lengths=[int(n) for n in rollout.lengths.tolist()],
        has_eos=[bool(e) for e in rollout.has_eos.tolist()],
        kl=[float(x) for x in kl.tolist()],
        n_prompts=len(encoded),
    )
    del policy
    gc.collect()
    return answers


def judge(oracle: Oracle, answers: Answers) -> list[float]:
    """The oracle's score of every answer."""
    return [float(oracle(p, t)) for p, t in zip(answers.prompts, answers.texts, strict=True)]


def reward_model_scores(
    path: str, answer_sets: Sequence[Answers], *, device: str = "cpu"
) -> list[list[float]]:
    """A stored reward model's scores of every answer of every set (loaded once)."""
    from trainer.reward import load_reward_model

    model = load_reward_model(path, device=device)
    try:
        return [[float(s) for s in model.score(a.prompts, a.texts)] for a in answer_sets]
    finally:
        del model
        gc.collect()
