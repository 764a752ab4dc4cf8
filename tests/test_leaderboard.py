"""Bradley–Terry ratings against hand-computed cases.

Two versions, i scoring s_i points of the games between them: the fit gives
p_i / p_j = s_i / s_j, so the Elo difference is 400 * log10(s_i / s_j). With the
default prior each side also gets half a point of one virtual drawn game.
"""

import math

import numpy as np
import pytest

from app.leaderboard import Leaderboard, Rating, elo, fit_bradley_terry, leaderboard

THREE_OF_FOUR = [("v1", "base", "a")] * 3 + [("base", "v1", "a")]


def elo_gap(ratio):
    return 400 * math.log10(ratio)


def test_maximum_likelihood_fit_matches_the_hand_computed_difference():
    wins = np.array([[0.0, 3.0], [1.0, 0.0]])  # v1 beat base 3 times of 4
    ratings = elo(fit_bradley_terry(wins, prior=0), ["v1", "base"])
    assert ratings == pytest.approx([1000 + elo_gap(3), 1000.0], abs=1e-6)
    assert 190.849 == pytest.approx(ratings[0] - ratings[1], abs=1e-3)


def test_a_balanced_cycle_rates_everyone_equal():
    wins = np.array([[0.0, 2, 1], [1, 0, 2], [2, 1, 0]])  # each beats the next 2 to 1
    assert [1000.0] * 3 == pytest.approx(
        list(elo(fit_bradley_terry(wins, prior=0), ["base", "x", "y"]))
    )


def test_the_table_for_three_wins_of_four():
    board = leaderboard(THREE_OF_FOUR)
    v1, base = board.ratings
    assert ("v1", round(1000 + elo_gap(3.5 / 1.5), 1), 4, 0.75) == (
        v1.version,
        v1.rating,
        v1.battles,
        v1.win_rate,
    )
    assert Rating("base", 1000.0, (1000.0, 1000.0), 4, 0.25) == base  # the anchor
    assert [[None, 0.75], [0.25, None]] == board.win_rates
    assert v1.ci95[0] <= v1.rating <= v1.ci95[1]


def test_ties_count_half():
    board = leaderboard([("v1", "base", "a"), ("v1", "base", "tie")])  # v1 scored 1.5 of 2
    assert [("v1", round(1000 + elo_gap(2.0 / 1.0), 1), 0.75), ("base", 1000.0, 0.25)] == [
        (r.version, r.rating, r.win_rate) for r in board.ratings
    ]
    even = leaderboard([("v1", "base", "a"), ("v1", "base", "b"), ("base", "v1", "tie")])
    assert [1000.0, 1000.0] == [r.rating for r in even.ratings]


def test_both_bad_and_self_battles_count_only_as_battles():
    noise = [("v1", "base", "both_bad")] * 5 + [("base", "base", "a")] * 2
    plain, noisy = leaderboard(THREE_OF_FOUR), leaderboard(THREE_OF_FOUR + noise)
    assert [(r.version, r.rating, r.ci95, r.win_rate) for r in plain.ratings] == [
        (r.version, r.rating, r.ci95, r.win_rate) for r in noisy.ratings
    ]
    assert [("v1", 9), ("base", 11)] == [(r.version, r.battles) for r in noisy.ratings]


def test_a_version_that_only_won_stays_finite():
    board = leaderboard([("v1", "base", "a")] * 5)
    assert round(1000 + elo_gap(5.5 / 0.5), 1) == board.ratings[0].rating


def test_first_day_two_samples_of_base():
    board = leaderboard([("base", "base", "a"), ("base", "base", "tie")])
    assert Leaderboard([Rating("base", 1000.0, (1000.0, 1000.0), 2, None)], [[None]]) == board


def test_without_base_the_mean_is_anchored():
    board = leaderboard([("v2", "v1", "a")] * 3 + [("v1", "v2", "a")])
    half = elo_gap(3.5 / 1.5) / 2
    assert [round(1000 + half, 1), round(1000 - half, 1)] == [r.rating for r in board.ratings]


def test_intervals_are_reproducible():
    results = THREE_OF_FOUR * 5 + [("v2", "v1", "tie"), ("v2", "base", "b")] * 3
    assert leaderboard(results) == leaderboard(results)
    assert leaderboard(results, seed=1) != leaderboard(results)
    for r in leaderboard(results).ratings:
        assert r.ci95[0] <= r.rating <= r.ci95[1]


def test_empty_and_invalid():
    assert Leaderboard([], []) == leaderboard([])
    with pytest.raises(ValueError, match="prior > 0"):
        leaderboard(THREE_OF_FOUR, prior=0)
