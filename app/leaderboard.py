"""Ratings of model versions from blind battle votes: Bradley–Terry, Elo-scaled.

    P(i beats j) = p_i / (p_i + p_j)          rating_i = 1000 + 400 * log10(p_i / p_base)

How votes count: a win is one point to the winner; a tie half a point to each side;
"both are bad" counts for neither (it says nothing about which is better); a battle
of a version against itself (two samples of live) says nothing about versions and is
left out of ratings, win rates and the matrix, though it counts in `battles`.

The fit is Hunter's MM algorithm (Hunter 2004, "MM algorithms for generalized
Bradley–Terry models"), the same maximum-likelihood fit a logistic regression would
give. Each version also plays `prior` virtual drawn games, spread evenly over the
others, so a version that has only ever won stays finite. Confidence intervals
resample the battles (bootstrap) with a fixed seed, so the same votes always give
the same table. The `base` version is anchored at 1000 when it is rated (otherwise
the geometric mean strength is).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage import Store

BASE_RATING = 1000.0
ANCHOR = "base"
ELO_PER_NAT = 400 / math.log(10)  # Elo points per unit of natural-log strength
DEFAULT_PRIOR = 1.0
POINTS = {"a": 1.0, "b": 0.0, "tie": 0.5}  # side a's score; both_bad is not a game


@dataclass(frozen=True)
class Rating:
    version: str
    rating: float
    ci95: tuple[float, float]
    battles: int
    """Voted battles this version took part in, of every kind."""
    win_rate: float | None
    """Share of its games against other versions that it won, ties half; None without any."""

    def as_json(self) -> dict[str, Any]:
        """The API's shape: `GET /api/leaderboard` rows."""
        return {
            "version": self.version,
            "rating": self.rating,
            "ci95": list(self.ci95),
            "battles": self.battles,
            "win_rate": self.win_rate,
        }


@dataclass(frozen=True)
class Leaderboard:
    ratings: list[Rating]
    """Best first."""
    win_rates: list[list[float | None]]
    """`win_rates[i][j]`: share of `ratings[i]`'s games against `ratings[j]` it won, ties
    half; None where they never met (and on the diagonal)."""


def score_matrix(games: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(K, K) points: `[i, j]` is what version i scored against version j.

    `games` is (N, 3): index of side a, index of side b, side a's score; each game
    counts `weights[n]` times (once without weights).
    """
    wins = np.zeros((k, k))  # (K, K)
    if len(games) == 0:
        return wins
    ia, ib = games[:, 0].astype(int), games[:, 1].astype(int)
    w = np.ones(len(games)) if weights is None else weights
    np.add.at(wins, (ia, ib), w * games[:, 2])
    np.add.at(wins, (ib, ia), w * (1.0 - games[:, 2]))
    return wins


def fit_bradley_terry(
    wins: np.ndarray, *, prior: float = DEFAULT_PRIOR, tol: float = 1e-10, max_iter: int = 10_000
) -> np.ndarray:
    """Log-strengths (mean 0) maximizing the Bradley–Terry likelihood of `wins` (K, K).

    With `prior=0` it is the plain maximum-likelihood fit, which exists only when no
    version has won (or lost) every one of its games.
    """
    k = wins.shape[0]
    if k < 2:
        return np.zeros(k)
    off_diagonal = 1.0 - np.eye(k)
    w = wins + off_diagonal * prior / (2 * (k - 1))  # virtual draws: half a point each way
    n = w + w.T  # (K, K) games between i and j
    scored = w.sum(axis=1)  # (K,)
    p = np.ones(k)
    for _ in range(max_iter):
        new = scored / (n / (p[:, None] + p[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())  # strengths are defined up to a common factor
        converged = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if converged:
            break
    return np.log(p)


def elo(log_strengths: np.ndarray, versions: Sequence[str]) -> np.ndarray:
    """Log-strengths on the Elo scale, the anchor version at 1000."""
    zero = log_strengths[list(versions).index(ANCHOR)] if ANCHOR in versions else 0.0
    return BASE_RATING + ELO_PER_NAT * (log_strengths - zero)


def leaderboard(
    results: Iterable[tuple[str, str, str]],
    *,
    prior: float = DEFAULT_PRIOR,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> Leaderboard:
    """The table, from voted battles as (version a, version b, outcome)."""
    if not prior > 0:
        raise ValueError("the leaderboard needs prior > 0: resampled battles can be one-sided")
    results = list(results)
    versions = list(dict.fromkeys(v for a, b, _ in results for v in (a, b)))
    index = {v: i for i, v in enumerate(versions)}
    games = np.array(
        [
            (index[a], index[b], POINTS[outcome])
            for a, b, outcome in results
            if a != b and outcome in POINTS
        ]
    ).reshape(-1, 3)  # (N, 3): side a, side b, side a's score
    k = len(versions)
    wins = score_matrix(games, k)
    ratings = elo(fit_bradley_terry(wins, prior=prior), versions)
    low, high = _bootstrap(games, versions, prior, n_bootstrap, seed, fallback=ratings)
    played = wins + wins.T
    battles = [sum(1 for a, b, _ in results if v in (a, b)) for v in versions]
    rows = [
        Rating(
            version=v,
            rating=round(float(ratings[i]), 1),
            ci95=(round(float(low[i]), 1), round(float(high[i]), 1)),
            battles=battles[i],
            win_rate=_share(wins[i].sum(), played[i].sum()),
        )
        for i, v in enumerate(versions)
    ]
    order = sorted(range(k), key=lambda i: (-ratings[i], versions[i]))
    matrix = [[_share(wins[i, j], played[i, j]) for j in order] for i in order]
    return Leaderboard([rows[i] for i in order], matrix)


def _bootstrap(games, versions, prior, n_bootstrap, seed, *, fallback):
    """2.5th and 97.5th percentiles of the ratings over battles resampled with replacement.

    Battles with the same sides and outcome are interchangeable, so each resample draws
    how many of each kind it holds (a multinomial over kinds) instead of drawing rows.
    """
    if len(games) == 0 or n_bootstrap < 1:
        return fallback, fallback
    kinds, counts = np.unique(games, axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_bootstrap, len(versions)))  # (n_bootstrap, K)
    for s in range(n_bootstrap):
        drawn = rng.multinomial(len(games), counts / len(games))
        wins = score_matrix(kinds, len(versions), drawn)
        samples[s] = elo(fit_bradley_terry(wins, prior=prior), versions)
    return np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)


def _share(scored: float, played: float) -> float | None:
    return round(float(scored / played), 4) if played else None


def store_leaderboard(store: Store, *, include_flagged: bool = False, **kwargs: Any) -> Leaderboard:
    """The leaderboard of the voted battles in `store`, without the votes of users flagged
    as abusive unless `include_flagged` (other keyword arguments: `leaderboard`)."""
    results = (
        (r.version_a, r.version_b, r.outcome)
        for r in store.battle_results(include_flagged=include_flagged)
    )
    return leaderboard(results, **kwargs)
