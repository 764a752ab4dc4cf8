"""The loop benchmark: win rates and intervals against hand-computed cases, the report
writer, and a one-cycle loop on the tiny model that writes a valid report."""

import argparse
import json
import math

import pytest

from bench.evaluate import environment_settings, version_row
from bench.measure import Answers
from bench.oracle_spread import reward_check, spread, spread_out
from bench.report import markdown, write_report
from bench.winrate import (
    bootstrap_ci,
    decisive_win_rate,
    median_ratio,
    outcomes,
    sign_agreement,
    tie_share,
    win_rate,
)
from tests.test_loop_e2e import tiny_loop_env


def longer(prompt: str, answer: str) -> float:
    """A trivial oracle: longer answers are better."""
    return float(len(answer))


def test_outcomes_count_ties_half():
    assert [1.0, 0.5, 0.0] == outcomes([3.0, 1.0, 2.0], [1.0, 1.0, 3.0])
    with pytest.raises(ValueError):
        outcomes([1.0], [1.0, 2.0])


def test_win_rate_weighs_every_outcome_the_same():
    assert 0.625 == win_rate([[1.0, 0.5], [0.0, 1.0]])
    assert 0.5 == win_rate([[1.0, 0.0, 0.5]])
    assert 2 / 3 == win_rate([[1.0], [1.0, 0.0]])


def test_bootstrap_interval_by_hand():
    # resampling two prompts: both [1, 0] (1/4), one of each (1/2), both [1, 1] (1/4)
    # gives win rates 0.5, 0.75, 1.0, so the 95% interval spans [0.5, 1.0]
    assert (0.5, 1.0) == bootstrap_ci([[1.0, 0.0], [1.0, 1.0]], n_resamples=2000, seed=0)
    assert (0.0, 1.0) == bootstrap_ci([[1.0], [0.0]], n_resamples=2000, seed=0)
    assert (0.75, 0.75) == bootstrap_ci([[1.0, 0.5], [0.5, 1.0]], seed=3)
    many = [[1.0]] * 30 + [[0.0]] * 10
    low, high = bootstrap_ci(many, seed=1)
    assert low < 0.75 < high and (low, high) == bootstrap_ci(many, seed=1)
    # binomial standard error sqrt(.75 * .25 / 40) = 0.068: the interval is about +-1.96 of it
    assert 0.2 < high - low < 0.34


def test_tie_share_and_decisive_win_rate_by_hand():
    groups = [[1.0, 0.5], [0.5, 0.5], [0.0, 1.0]]
    assert 0.5 == tie_share(groups)  # 3 ties in 6 pairs
    assert 2 / 3 == decisive_win_rate(groups)  # 2 wins, 1 loss, ties left out
    assert 7 / 12 == win_rate(groups)  # (1 + 0.5 * 3 + 1) / 6: ties pull towards 0.5
    assert decisive_win_rate([[0.5], [0.5]]) is None
    assert 0.0 == tie_share([[1.0, 0.0]]) and 0.5 == decisive_win_rate([[1.0, 0.0]])
    with pytest.raises(ValueError):
        tie_share([])


def test_decisive_interval_resamples_prompts_and_skips_all_tie_resamples():
    # prompt A: a win and a tie, prompt B: a loss and a tie. Resamples: AA (1/4) gives
    # 1.0, BB (1/4) gives 0.0, AB (1/2) gives 0.5: the interval spans [0, 1]
    assert (0.0, 1.0) == bootstrap_ci([[1.0, 0.5], [0.0, 0.5]], decisive=True, seed=0)
    # a prompt with only ties adds nothing: the other prompt's wins decide every resample
    # that has any decisive pair, and resamples of the tie prompt alone are skipped
    assert (1.0, 1.0) == bootstrap_ci([[1.0, 1.0], [0.5, 0.5]], decisive=True, seed=0)
    low, high = bootstrap_ci([[0.5], [0.5]], decisive=True)
    assert math.isnan(low) and math.isnan(high)


def test_clustered_interval_is_wider_than_treating_samples_as_independent():
    # 20 prompts, 4 samples each, every sample of a prompt the same outcome: the 80
    # outcomes carry only 20 prompts' worth of evidence
    clustered = [[1.0] * 4] * 12 + [[0.0] * 4] * 8
    independent = [[o] for g in clustered for o in g]
    low, high = bootstrap_ci(clustered, seed=0)
    i_low, i_high = bootstrap_ci(independent, seed=0)
    assert win_rate(clustered) == win_rate(independent) == 0.6
    # sd of a proportion: sqrt(.6 * .4 / 20) = 0.11 against sqrt(.6 * .4 / 80) = 0.055
    assert 0.35 < high - low < 0.5 and 0.17 < i_high - i_low < 0.25


def test_version_row_from_hand_made_answers():
    def answers(lengths, has_eos):
        n = len(lengths)
        return Answers(
            version="x",
            prompts=["p", "q"] * (n // 2),
            texts=["t"] * n,
            lengths=lengths,
            has_eos=has_eos,
            kl=[0.5] * n,
            n_prompts=2,
        )

    # 2 prompts x 2 samples; answer i is to prompt i % 2: outcomes p: [win, tie], q: [tie, loss]
    version = answers([10, 20, 30, 40], [True, False, False, False])
    reference = answers([20, 20, 20, 20], [True, True, False, False])
    args = argparse.Namespace(bootstrap=200, seed=0)
    row = version_row("v1", "live", version, [2.0, 1.0, 1.0, 0.0], reference, [1.0] * 4, args)
    assert 0.5 == row["oracle_win_rate_vs_base"] and 0.5 == row["tie_share"]
    assert 0.5 == row["decisive_win_rate"] and [0.0, 1.0] == row["decisive_ci95"]
    assert 0.75 == row["no_eos_rate"] and 25 == row["median_length"]
    assert 1.25 == row["median_length_ratio"] and 4 == row["answer_pairs"]
    assert 0.5 == row["kl_to_base"]
    ties = version_row("base", "retired", version, [1.0] * 4, reference, [1.0] * 4, args)
    assert ties["decisive_win_rate"] is None is ties["decisive_ci95"]
    assert 1.0 == ties["tie_share"] and 0.5 == ties["oracle_win_rate_vs_base"]
    json.dumps(row, allow_nan=False)


def test_report_says_which_config_was_used():
    env = {"RLHF_CHAT_PPO_ROUNDS": "2", "RLHF_CHAT_AUTH_ADMIN_TOKEN": "s3cret", "HOME": "/h"}
    assert {
        "RLHF_CHAT_AUTH_ADMIN_TOKEN": "(hidden)",
        "RLHF_CHAT_PPO_ROUNDS": "2",
    } == environment_settings(env)
    report = {"versions": [], "cycles": [], "settings": {"config_file": None, "environment": {}}}
    assert "No config file (the product defaults)." in markdown(report)
    report["settings"] = {"config_file": "x.toml", "environment": {"RLHF_CHAT_A": "1"}}
    assert "Config file `x.toml`, with `RLHF_CHAT_A=1`." in markdown(report)


def test_oracle_spread_by_hand():
    # pairs within a prompt only: (1, 1) a tie, (1, 1.2) twice near (|d| < noise 0.5);
    # the second prompt's one pair (0, 3) decisive
    s = spread([[1.0, 1.0, 1.2], [0.0, 3.0]], noise=0.5)
    assert 4 == s.pairs
    assert (0.25, 0.5, 0.25) == (s.exact_ties, s.near_ties, s.decisive)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert s.vote_agreement == pytest.approx((0.5 + 2 * sigmoid(0.4) + sigmoid(6)) / 4)
    assert (0.0, 1.0, 3.0) == (s.score_min, s.score_median, s.score_max)
    assert 1.0 == spread([[4.0, 4.0]], noise=0.5).exact_ties
    with pytest.raises(ValueError):
        spread([[1.0], [2.0]], noise=0.5)
    assert ["a", "c"] == spread_out(["a", "b", "c", "d"], 2) and ["a"] == spread_out(["a"], 3)


def test_reward_check_learns_a_taste_its_features_show():
    import torch

    # 8 prompts x 4 answers; the oracle's score is the first feature, the second is noise
    gen = torch.Generator().manual_seed(0)
    features = [
        [torch.randn(2, generator=gen, dtype=torch.float64) for _ in range(4)] for _ in range(8)
    ]
    scores = [[float(f[0]) * 3 for f in g] for g in features]
    checks = reward_check(features, scores, noise=0.5, l2=0.01, splits=3)
    # 24 noisy votes (some against the oracle) per split; chance would be 0.5
    assert 3 == len(checks) and all(n == 24 and a >= 0.8 for n, a in checks), checks
    assert checks == reward_check(features, scores, noise=0.5, l2=0.01, splits=3)
    # an oracle that ties everything casts no votes: nothing to fit
    ties = [[1.0] * 4 for _ in features]
    assert [(0, None)] == reward_check(features, ties, noise=0.5, l2=0.01, splits=1)


def test_median_ratio_and_sign_agreement():
    assert 2.0 == median_ratio([2, 4, 6], [2, 2, 4])
    # truth decides the first three pairs: agree, disagree, no prediction (half)
    assert 0.5 == sign_agreement([1.0, -1.0, 0.0, 5.0], [2.0, 3.0, 1.0, 0.0])
    assert sign_agreement([1.0], [0.0]) is None


def report_shape_errors(report):
    errors = []
    for v in report["versions"]:
        if not isinstance(v["name"], str):
            errors.append(f"name {v['name']!r}")
        for key in ("oracle_win_rate_vs_base", "kl_to_base", "median_length_ratio"):
            if not isinstance(v[key], float):
                errors.append(f"{v['name']} {key} {v[key]!r}")
        lo, hi = v["ci95"]
        if not (isinstance(lo, float) and isinstance(hi, float) and 0 <= lo <= hi <= 1):
            errors.append(f"{v['name']} ci95 {v['ci95']!r}")
    for c in report["cycles"]:
        if not isinstance(c["seconds"], float) or not isinstance(c["votes"], int):
            errors.append(f"cycle {c!r}")
        if not (
            c["reward_model_accuracy"] is None or isinstance(c["reward_model_accuracy"], float)
        ):
            errors.append(f"reward_model_accuracy {c['reward_model_accuracy']!r}")
    return errors


def test_report_files(tmp_path):
    row = {"ci95": [0.4, 0.6], "kl_to_base": 0.0, "median_length_ratio": 1.0}
    report = {
        "versions": [
            {"name": "base", "oracle_win_rate_vs_base": 0.5, **row},
            {"name": "v1", "oracle_win_rate_vs_base": 0.7, **row, "ci95": [0.6, 0.8]},
        ],
        "cycles": [{"cycle": 1, "seconds": 12.0, "reward_model_accuracy": None, "votes": 8}],
        "settings": {"oracle": "m:f"},
    }
    paths = write_report(tmp_path, report)
    names = {p.name for p in paths}
    assert {"report.json", "report.md", "win_rate.png", "kl.png", "length.png"} <= names
    assert report == json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert "| v1 |" in md and "[0.600, 0.800]" in md and "![" in md
    assert "| tie share | decisive win rate |" in md and "| no EOS |" in md
    assert [] == report_shape_errors(report)


@pytest.mark.e2e
def test_one_cycle_loop_on_the_tiny_model_writes_a_valid_report(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from bench.loop import main

    for key, value in tiny_loop_env(tiny_model_dir).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "loop"
    args = ["--oracle", "tests.test_bench_loop:longer", "--cycles", "1", "--out", str(out)]
    args += ["--votes-per-cycle", "10", "--chats-per-cycle", "2", "--users", "2"]
    args += ["--max-new-tokens", "6", "--heldout", "4", "--bootstrap", "200"]
    assert 0 == main(args)
    report = json.loads((out / "report.json").read_text())
    assert [] == report_shape_errors(report)
    assert ["base", "v1"] == [v["name"] for v in report["versions"]]
    base = report["versions"][0]
    assert 0.0 == base["kl_to_base"] and base["median_length_ratio"] > 0
    settings = report["settings"]
    assert settings["config_file"] is None and 2 == settings["samples"]  # the defaults
    assert 6 == settings["max_new_tokens"] and "RLHF_CHAT_MODEL_SOURCE" in settings["environment"]
    for v in report["versions"]:
        assert 8 == v["answer_pairs"] and 0 <= v["tie_share"] <= 1, v  # 4 prompts x 2
        assert 0 <= v["no_eos_rate"] <= 1 and 0 < v["median_length"] <= 6, v
        assert v["decisive_win_rate"] is None or 0 <= v["decisive_win_rate"] <= 1, v
    assert "No config file (the product defaults)" in (out / "report.md").read_text()
    [cycle] = report["cycles"]
    assert "promoted" == cycle["outcome"] and 10 == cycle["votes"], cycle
    for name in ("report.md", "win_rate.png", "kl.png", "length.png", "reward_model.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "win rate vs base" in printed and "cycle 1: promoted" in printed


@pytest.mark.e2e
def test_votes_bench_counts_acknowledged_votes_in_the_database(tmp_path, capsys):
    from bench.votes import main

    assert 0 == main(["--out", str(tmp_path), "--voters", "4", "--votes-per-voter", "3"])
    result = json.loads((tmp_path / "votes.json").read_text())
    assert 12 == result["votes_sent"] == result["votes_acknowledged"]
    assert 0 == result["acknowledged_missing_from_db"] == result["votes_failed"]
    assert result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert (tmp_path / "vote_latency.png").exists()
    assert "missing from the database: 0" in capsys.readouterr().out
