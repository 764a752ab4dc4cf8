from trainer.cycle_config import GateConfig
from trainer.gate import PolicyStats, evaluate_gate

LIVE = PolicyStats(mean_reward=0.0, kl_to_base=0.0, median_length=40, no_eos_rate=0.05)


def stats(**changes):
    values = {"mean_reward": 0.5, "kl_to_base": 2.0, "median_length": 44, "no_eos_rate": 0.05}
    return PolicyStats(**{**values, **changes})


def test_a_better_candidate_within_bounds_passes():
    result = evaluate_gate(stats(), LIVE, GateConfig(), reward_agreement=0.8)
    assert (True, []) == (result.passed, result.reasons)
    assert 0.5 == result.metrics["reward_gain"]


def test_each_bar_rejects_with_its_reason():
    config = GateConfig(max_kl=5.0)
    cases = {
        "reward gain 0.000 is not above 0.0": stats(mean_reward=0.0),
        "KL to base 12.00 is over the budget 5.0": stats(kl_to_base=12.0),
        "median length drifted 75% (40 → 70 tokens), over 50%": stats(median_length=70),
        "no-EOS rate rose from 5% to 30%": stats(no_eos_rate=0.3),
    }
    for reason, candidate in cases.items():
        result = evaluate_gate(candidate, LIVE, config)
        assert (False, [reason]) == (result.passed, result.reasons)


def test_reward_model_disagreeing_with_humans_rejects():
    result = evaluate_gate(stats(), LIVE, GateConfig(), reward_agreement=0.4)
    assert ["reward model agrees with 40% of held-out votes, under 55%"] == result.reasons


def test_several_failures_are_all_reported():
    result = evaluate_gate(stats(kl_to_base=50, no_eos_rate=0.9), LIVE, GateConfig())
    assert 2 == len(result.reasons)
