"""The gate's samples: paired by seed, spread over the held-out prompts."""

from dataclasses import replace

from trainer.evaluation import sample_policy
from trainer.ppo import build_policy
from trainer.ppo_config import PPOConfig

CONFIG = PPOConfig(max_new_tokens=5, generation_batch_size=4, minibatch_size=2)
PROMPTS = ["Hi", "Name a colour.", "Count to three."]


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]


def test_the_same_seed_gives_the_same_answers_and_another_seed_others(tiny_model_dir):
    policy, tokenizer = build_policy(tiny_model_dir, CONFIG)
    first = sample_policy(policy, tokenizer, PROMPTS, length_reward, CONFIG, samples=8, seed=3)
    again = sample_policy(policy, tokenizer, PROMPTS, length_reward, CONFIG, samples=8, seed=3)
    other = sample_policy(policy, tokenizer, PROMPTS, length_reward, CONFIG, samples=8, seed=4)
    assert first == again
    assert first.rewards != other.rewards
    # 8 samples over 3 prompts: 3 rounds of every prompt, prompt-major
    assert [0, 1, 2] * 3 == first.prompt_ids
    assert [0.0] * 9 == first.kl  # a fresh adapter is the base model


def test_the_gate_length_overrides_the_rollout_length(tiny_model_dir):
    config = replace(CONFIG, max_new_tokens=2)
    policy, tokenizer = build_policy(tiny_model_dir, config)
    out = sample_policy(
        policy, tokenizer, PROMPTS, length_reward, config, samples=3, seed=0, max_new_tokens=7
    )
    assert max(out.lengths) > 2
    assert all(n <= 7 for n in out.lengths)
