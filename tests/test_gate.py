"""The gate's statistics on hand-made samples, and its accept/reject rates on a scripted
scorer (the rates on SmolLM2 are in the README's gate section)."""

import random

import pytest

from trainer.cycle_config import GateConfig
from trainer.gate import (
    PolicySamples,
    evaluate_gate,
    no_eos_rise_p_value,
    paired_bootstrap_lower_bound,
)

PROMPTS = [i % 32 for i in range(128)]  # 32 held-out prompts, 4 answers each


def samples(rewards, *, kl=2.0, length=40, eos=1.0, prompts=PROMPTS):
    n = len(rewards)
    n_eos = round(eos * n)
    return PolicySamples(
        prompt_ids=list(prompts),
        rewards=list(rewards),
        kl=[kl] * n,
        lengths=[length] * n,
        has_eos=[True] * n_eos + [False] * (n - n_eos),
    )


def scripted(seed, shift, noise=0.3):
    """Live and a candidate answering with the same seeds: each answer's score is the
    prompt's difficulty plus the answer's luck (shared, since the seeds are shared) plus
    the candidate's own deviation `noise` and its true `shift`."""
    rng = random.Random(seed)
    difficulty = [rng.gauss(0, 1) for _ in range(32)]
    live = [difficulty[p] + rng.gauss(0, 0.7) for p in PROMPTS]
    candidate = [r + shift + rng.gauss(0, noise) for r in live]
    return samples(candidate, kl=2.0), samples(live, kl=0.0)


def test_an_identical_candidate_passes():
    live = samples([random.Random(1).gauss(0, 1) for _ in PROMPTS])
    result = evaluate_gate(live, live, GateConfig(), reward_agreement=0.8)
    assert (True, []) == (result.passed, result.reasons)
    assert (0.0, 0.0) == (result.metrics["reward_gain"], result.metrics["reward_gain_lower"])


def test_the_lower_bound_of_equal_differences_is_that_difference():
    assert 0.5 == pytest.approx(
        paired_bootstrap_lower_bound([0.5] * 8, [0, 0, 1, 1, 2, 2, 3, 3], confidence=0.95)
    )


def test_the_bootstrap_resamples_prompts_not_answers():
    # one prompt's answers all gained, the other's all lost: two clusters, not 64 answers
    diffs = [1.0] * 32 + [-1.0] * 32
    clustered = paired_bootstrap_lower_bound(diffs, [0] * 32 + [1] * 32, confidence=0.95)
    independent = paired_bootstrap_lower_bound(diffs, list(range(64)), confidence=0.95)
    assert clustered == -1.0
    assert -0.3 < independent < 0.0


def test_answers_to_a_single_prompt_are_resampled_one_by_one():
    lower = paired_bootstrap_lower_bound([0.4, 0.6] * 16, [7] * 32, confidence=0.95)
    assert 0.45 < lower < 0.5


def test_the_no_eos_p_value_matches_a_hand_computed_z_test():
    # 40% vs 20% of 100 each: pooled 0.3, se = sqrt(0.3 * 0.7 * 0.02) = 0.0648, z = 3.086
    candidate = samples([0.0] * 100, eos=0.6, prompts=range(100))
    live = samples([0.0] * 100, eos=0.8, prompts=range(100))
    assert no_eos_rise_p_value(candidate, live) == pytest.approx(0.00101, abs=2e-5)
    assert no_eos_rise_p_value(live, candidate) > 0.99


def test_each_bar_rejects_with_its_reason():
    live = samples([0.0] * 128, kl=0.0, eos=0.95)
    cases = {
        "reward gain -0.500: its 95% lower bound -0.500 is below -0.2 (not shown to be "
        "no worse)": samples([-0.5] * 128),
        "KL to base 0.500 nats per token is over the budget 0.25": samples([0.1] * 128, kl=20.0),
        "median length drifted 75% (40 → 70 tokens), over 50%": samples([0.1] * 128, length=70),
        "no-EOS rate rose from 5% to 30% (p = 0.000)": samples([0.1] * 128, eos=0.7),
    }
    for reason, candidate in cases.items():
        result = evaluate_gate(candidate, live, GateConfig())
        assert reason in result.reasons, result.reasons


def test_a_small_no_eos_rise_passes():
    live = samples([0.0] * 128, eos=0.95)
    assert evaluate_gate(samples([0.1] * 128, eos=0.92), live, GateConfig()).passed


def test_a_required_gain_rejects_a_candidate_that_is_merely_no_worse():
    live = samples([0.0] * 128)
    result = evaluate_gate(samples([0.05] * 128), live, GateConfig(min_reward_gain=0.1))
    assert ["reward gain +0.050 is under the required 0.1"] == result.reasons


def test_reward_model_disagreeing_with_humans_rejects():
    live = samples([0.0] * 128)
    result = evaluate_gate(samples([0.1] * 128), live, GateConfig(), reward_agreement=0.4)
    assert ["reward model agrees with 40% of held-out votes, under 55%"] == result.reasons


def test_answers_to_different_prompts_cannot_be_compared():
    with pytest.raises(ValueError, match="same prompts"):
        evaluate_gate(samples([0.0] * 4, prompts=[0, 1, 2, 3]), samples([0.0] * 4), GateConfig())


def test_gate_rates_on_a_scripted_scorer():
    """Over 20 seeds: a candidate no different from live passes at least 90%, one worse
    by half a reward-model std is rejected at least 90%, one better by as much passes."""
    config = GateConfig()

    def pass_rate(shift, noise):
        return sum(evaluate_gate(*scripted(s, shift, noise), config).passed for s in range(20)) / 20

    assert pass_rate(0.0, 0.0) >= 0.9
    assert pass_rate(-0.5, 0.3) <= 0.1
    assert pass_rate(0.5, 0.3) >= 0.9
