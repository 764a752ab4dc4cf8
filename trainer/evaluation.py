"""What the gate reads: a policy's paired answers to held-out prompts, scored.

    sample_policy(policy, tokenizer, prompts, reward_fn, config, ...) -> PolicySamples

Each held-out prompt is answered `ceil(samples / len(prompts))` times; every generate
call is seeded from `seed` and its position, so the live policy and a candidate
evaluated with the same arguments draw the same random numbers and their answers pair
up (trainer.gate). Scores are the reward function's own (a missing EOS is the gate's
separate check, not a penalty folded into the reward); KL to the base is summed over
each answer's tokens, with the adapter disabled as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from trainer.gate import PolicySamples
from trainer.losses import kl_k1
from trainer.ppo import (
    Policy,
    PPOError,
    RewardFunction,
    call_reward,
    encode_prompts,
    generate_rollout,
    sequence_logprobs,
)
from trainer.ppo_config import PPOConfig


@torch.no_grad()
def sample_policy(
    policy: Policy,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Any],
    reward_fn: RewardFunction,
    config: PPOConfig,
    *,
    samples: int,
    seed: int,
    max_new_tokens: int | None = None,
) -> PolicySamples:
    """`samples` answers spread evenly over `prompts` (at least one each), scored."""
    encoded = encode_prompts(tokenizer, prompts, config)
    if not encoded:
        raise PPOError("no usable prompts to evaluate on")
    repeats = max(1, math.ceil(samples / len(encoded)))
    # prompt-major order keeps a prompt's answers in different generate calls: each
    # repeat of a prompt then draws different random numbers
    order = [(r, i) for r in range(repeats) for i in range(len(encoded))]
    rollout = generate_rollout(
        policy,
        tokenizer,
        [encoded[i][0] for _, i in order],
        [encoded[i][1] for _, i in order],
        config,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )
    scores = call_reward(reward_fn, rollout.prompts, rollout.completions)
    logprobs, ref_logprobs, _, _ = sequence_logprobs(policy, rollout, config, with_values=False)
    mask = rollout.response_mask.to(logprobs.device)  # (B, R)
    kl = (kl_k1(logprobs, ref_logprobs) * mask).sum(1)  # (B,)
    return PolicySamples(
        prompt_ids=[i for _, i in order],
        rewards=scores.tolist(),
        kl=kl.tolist(),
        lengths=[int(n) for n in rollout.lengths.tolist()],
        has_eos=[bool(e) for e in rollout.has_eos.tolist()],
    )
