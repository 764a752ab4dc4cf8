"""Outcomes of the trainer that are not results.

    Exception
    ├── TrainingSkipped       not enough data to train: a recorded outcome, not a failure
    └── TrainingError         a training step that ran and could not finish
        └── RewardModelError  a reward model that is missing or cannot be loaded

A skip is recorded as a run with status `skipped` whose message says how much more
data is needed; callers report it and carry on. A `TrainingError` is recorded as a
`failed` run.
"""

from __future__ import annotations


class TrainingSkipped(Exception):
    """Too little data to train; `needed` and `have` say how far off it is."""

    def __init__(self, message: str, *, needed: int = 0, have: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.have = have


class TrainingError(Exception):
    """A training step failed."""


class RewardModelError(TrainingError):
    """No usable reward model: none trained yet, or its files are missing or unreadable."""
