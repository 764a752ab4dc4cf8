"""The loop benchmark: win rates and intervals against hand-computed cases, the report
writer, and a one-cycle loop on the tiny model that writes a valid report."""

import json

import pytest

from bench.report import write_report
from bench.winrate import bootstrap_ci, median_ratio, outcomes, sign_agreement, win_rate
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
