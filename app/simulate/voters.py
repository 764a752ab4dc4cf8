"""How a simulated user decides: an oracle's scores turned into noisy Bradley–Terry
votes and thumbs (pure functions), and where the oracle and the prompts come from."""

from __future__ import annotations

import bisect
import json
import math
import os
import pkgutil
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Oracle = Callable[[str, str], float]
OUTCOMES = ("a", "b", "tie", "both_bad")
DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "bench" / "prompts" / "train.jsonl"


class SimulationError(RuntimeError):
    """The simulation cannot start: bad settings, prompts, oracle or server."""


# -- decisions (pure) --------------------------------------------------------------------


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def choose_outcome(
    score_a: float,
    score_b: float,
    *,
    noise: float,
    rng: random.Random,
    tie_margin: float = 0.0,
    both_bad_below: float | None = None,
) -> str:
    """A noisy Bradley–Terry vote between two scored answers."""
    if both_bad_below is not None and score_a < both_bad_below and score_b < both_bad_below:
        return "both_bad"
    diff = score_a - score_b
    if abs(diff) <= tie_margin:
        return "tie"
    if noise == 0:
        return "a" if diff > 0 else "b"
    return "a" if rng.random() < sigmoid(diff / noise) else "b"


def choose_thumb(score: float, reference: float | None, *, noise: float, rng: random.Random) -> int:
    """1 (up) or -1 (down): up with probability sigmoid((score - reference) / noise).
    Without a reference yet (the first answer), a fair coin."""
    if reference is None:
        return 1 if rng.random() < 0.5 else -1
    diff = score - reference
    if noise == 0:
        return 1 if diff > 0 else -1 if diff < 0 else (1 if rng.random() < 0.5 else -1)
    return 1 if rng.random() < sigmoid(diff / noise) else -1


class RunningMedian:
    """The median of the values added so far (thread-safe)."""

    def __init__(self) -> None:
        self._values: list[float] = []
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            bisect.insort(self._values, value)

    def value(self) -> float | None:
        with self._lock:
            n = len(self._values)
            if n == 0:
                return None
            mid = n // 2
            return self._values[mid] if n % 2 else (self._values[mid - 1] + self._values[mid]) / 2


# -- oracle and prompts ------------------------------------------------------------------


def load_oracle(spec: str) -> Oracle:
    """Import `MODULE:FUNC` (modules in the working directory import too)."""
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise SimulationError(f"an oracle is given as MODULE:FUNC, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = pkgutil.resolve_name(spec)
    except (ImportError, ValueError) as exc:
        raise SimulationError(f"cannot import {module_name!r} for the oracle: {exc}") from exc
    except AttributeError as exc:
        raise SimulationError(f"{module_name!r} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise SimulationError(f"{spec} is not callable")
    return obj


def load_prompts(path: str | Path | None = None) -> list[str]:
    """Prompts, one per line; in `.jsonl` each line a string or `{"prompt": str}`.
    Default: the prompt set shipped in the source checkout (bench/prompts/train.jsonl)."""
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    if not path.exists():
        raise SimulationError(f"no prompt file at {path}: pass --prompts FILE")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if path.suffix not in (".jsonl", ".json"):
        prompts = lines
    else:
        prompts = []
        for n, line in enumerate(lines, 1):
            value = json.loads(line)
            if isinstance(value, dict):
                value = value.get("prompt")
            if not isinstance(value, str) or not value.strip():
                raise SimulationError(f"{path}:{n}: expected a string or {{'prompt': str}}")
            prompts.append(value)
    if not prompts:
        raise SimulationError(f"{path} holds no prompts")
    return prompts


def judge(oracle: Oracle, prompt: str, answer: str) -> float:
    score = float(oracle(prompt, answer))
    if not math.isfinite(score):
        raise ValueError(f"the oracle gave {score} (scores must be finite numbers)")
    return score
