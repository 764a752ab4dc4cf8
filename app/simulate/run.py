"""The simulation itself: sessions, a plan of battles and chats spread over the users,
run a few at a time through the HTTP API, each answer judged by the oracle
(`app.simulate.voters`), with retries after 429 and 503."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.simulate.voters import (
    OUTCOMES,
    Oracle,
    RunningMedian,
    SimulationError,
    choose_outcome,
    choose_thumb,
    judge,
)

RETRIED_STATUS = (429, 503)


class RequestFailed(RuntimeError):
    """One step's request was answered with an error (after any retries)."""

    def __init__(self, step: str, status: int | None, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.step = step
        self.status = status


@dataclass
class SimulationConfig:
    """What the scripted users do and how they decide."""

    users: int = 10
    """Simulated users, one anonymous session each."""

    votes: int = 100
    """Blind battles to start and vote on, in all."""

    chats: int = 0
    """Chats to start and thumb up or down, in all."""

    noise: float = 1.0
    """Temperature of the Bradley–Terry choice, in oracle units; 0 always picks the
    better answer."""

    tie_margin: float = 0.0
    """A vote is a tie when the two scores differ by at most this (equal scores always
    tie)."""

    both_bad_below: float | None = None
    """Vote "both are bad" when both scores are below this; None: never."""

    seed: int = 0
    """Seeds every choice: the same seed and answers give the same votes."""

    concurrency: int = 4
    """Requests in flight at once (a battle generates two answers)."""

    max_new_tokens: int = 64
    """Answer length asked for in battles and chats."""

    max_retries: int = 8
    """Retries of one request after a 429, a 503 or a broken connection."""

    request_timeout_s: float = 600.0
    """Seconds to wait for one answer."""

    def __post_init__(self) -> None:
        for name in ("users", "concurrency", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise SimulationError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("votes", "chats", "max_retries"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.noise < 0 or self.tie_margin < 0:
            raise SimulationError("noise and tie_margin must not be negative")


@dataclass
class SimulationSummary:
    """What happened; `acknowledged` counts only requests the server answered with 2xx."""

    users: list[int] = field(default_factory=list)
    """Ids of the simulated users (from their sessions)."""
    votes_cast: int = 0
    votes_acknowledged: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Acknowledged votes by outcome."""
    thumbs_acknowledged: int = 0
    thumbs: Counter[str] = field(default_factory=Counter)
    """Acknowledged thumbs: "up" / "down"."""
    preferred: dict[str, float] = field(default_factory=dict)
    """Per version revealed after a vote: battles it won (a tie counts half)."""
    battled: Counter[str] = field(default_factory=Counter)
    """Per version: voted battles against another version."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed steps by name: session, battle, vote, chat, thumb, oracle."""
    errors: list[str] = field(default_factory=list)
    """The first few failure messages."""
    retries: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": len(self.users),
            "votes_cast": self.votes_cast,
            "votes_acknowledged": self.votes_acknowledged,
            "outcomes": dict(self.outcomes),
            "thumbs_acknowledged": self.thumbs_acknowledged,
            "thumbs": dict(self.thumbs),
            "version_win_rates": self.version_win_rates(),
            "failures": dict(self.failures),
            "errors": self.errors,
            "retries": self.retries,
            "seconds": round(self.seconds, 2),
        }

    def version_win_rates(self) -> dict[str, float]:
        """Share of its battles against another version each version won, ties half."""
        return {
            v: round(self.preferred.get(v, 0.0) / n, 4) for v, n in sorted(self.battled.items())
        }

    def text(self) -> str:
        outcomes = ", ".join(f"{k} {self.outcomes.get(k, 0)}" for k in OUTCOMES)
        lines = [
            f"{len(self.users)} users in {self.seconds:.0f}s; votes cast {self.votes_cast}, "
            f"acknowledged {self.votes_acknowledged} ({outcomes})",
            f"thumbs acknowledged {self.thumbs_acknowledged} "
            f"(up {self.thumbs.get('up', 0)}, down {self.thumbs.get('down', 0)}); "
            f"retries after 429/503 {self.retries}",
        ]
        if self.battled:
            rates = ", ".join(f"{v} {r:.0%}" for v, r in self.version_win_rates().items())
            lines.append(f"oracle-voted win rate by version: {rates}")
        failures = ", ".join(f"{k} {n}" for k, n in sorted(self.failures.items())) or "none"
        lines.append(f"failures: {failures}")
        lines += [f"  {e}" for e in self.errors]
        return "\n".join(lines)


# -- the users ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedUser:
    user_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Task:
    kind: str  # "battle" | "chat"
    index: int  # position in the whole run: seeds this task's choices
    user: SimulatedUser
    prompt: str


class Simulator:
    """Runs the scripted users against one server; see the module docstring."""

    def __init__(
        self,
        client: httpx.Client,
        oracle: Oracle,
        prompts: Sequence[str],
        config: SimulationConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not prompts:
            raise SimulationError("no prompts to ask")
        self.client = client
        self.oracle = oracle
        self.prompts = list(prompts)
        self.config = config
        self.summary = SimulationSummary()
        self.median = RunningMedian()
        self._sleep = sleep
        self._lock = threading.Lock()

    def request(
        self, step: str, path: str, body: dict[str, Any] | None, user: SimulatedUser | None
    ) -> Any:
        """POST with retries after 429, 503 and broken connections; the JSON answer.
        `step` names the request in a `RequestFailed`."""
        headers = user.headers if user else {}
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            try:
                response = self.client.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise RequestFailed(step, None, f"{type(exc).__name__}: {exc}") from exc
                self._back_off(attempt, None)
                continue
            if response.status_code in RETRIED_STATUS and not last:
                self._back_off(attempt, response.headers.get("retry-after"))
                continue
            if response.is_success:
                return response.json()
            raise RequestFailed(step, response.status_code, _error_text(response))
        raise AssertionError("unreachable")

    def _back_off(self, attempt: int, retry_after: str | None) -> None:
        with self._lock:
            self.summary.retries += 1
        try:
            delay = float(retry_after) if retry_after else 0.5 * 2**attempt
        except ValueError:
            delay = 0.5 * 2**attempt
        self._sleep(min(delay, 15.0) * (1.0 + 0.25 * random.random()))  # jitter spreads retries

    def sign_up(self) -> list[SimulatedUser]:
        users = []
        for _ in range(self.config.users):
            answer = self.request("session", "/api/session", None, None)
            users.append(SimulatedUser(int(answer["user_id"]), answer["user_token"]))
        self.summary.users = [u.user_id for u in users]
        return users

    def plan(self, users: Sequence[SimulatedUser]) -> list[Task]:
        """Battles and chats interleaved, users taking turns, prompts drawn with the seed."""
        rng = random.Random(self.config.seed)
        kinds = ["battle"] * self.config.votes + ["chat"] * self.config.chats
        rng.shuffle(kinds)
        return [
            Task(kind, i, users[i % len(users)], rng.choice(self.prompts))
            for i, kind in enumerate(kinds)
        ]

    def run_task(self, task: Task) -> None:
        rng = random.Random(self.config.seed * 1_000_003 + task.index)
        try:
            if task.kind == "battle":
                self._battle(task, rng)
            else:
                self._chat(task, rng)
        except RequestFailed as exc:
            self._fail(exc.step, str(exc))
        except Exception as exc:  # the oracle's own errors: count them, keep going
            self._fail("oracle", f"{type(exc).__name__}: {exc}")

    def _messages(self, task: Task) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": task.prompt}],
            "max_new_tokens": self.config.max_new_tokens,
        }

    def _battle(self, task: Task, rng: random.Random) -> None:
        battle = self.request("battle", "/api/battles", self._messages(task), task.user)
        score_a = judge(self.oracle, task.prompt, battle["a"]["content"])
        score_b = judge(self.oracle, task.prompt, battle["b"]["content"])
        c = self.config
        outcome = choose_outcome(
            score_a,
            score_b,
            noise=c.noise,
            rng=rng,
            tie_margin=c.tie_margin,
            both_bad_below=c.both_bad_below,
        )
        with self._lock:
            self.summary.votes_cast += 1
        path = f"/api/battles/{battle['battle_id']}/vote"
        reveal = self.request("vote", path, {"outcome": outcome}, task.user)
        with self._lock:
            self.summary.votes_acknowledged += 1
            self.summary.outcomes[outcome] += 1
            a, b = reveal.get("version_a"), reveal.get("version_b")
            if a and b and a != b and outcome in ("a", "b", "tie"):
                self.summary.battled.update([a, b])
                won = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}[outcome]
                for version, points in zip((a, b), won, strict=True):
                    self.summary.preferred[version] = (
                        self.summary.preferred.get(version, 0.0) + points
                    )

    def _chat(self, task: Task, rng: random.Random) -> None:
        answer = self.request("chat", "/api/chat", self._messages(task), task.user)
        score = judge(self.oracle, task.prompt, answer["content"])
        value = choose_thumb(score, self.median.value(), noise=self.config.noise, rng=rng)
        self.median.add(score)
        body = {"message_id": answer["message_id"], "kind": "thumb", "value": value}
        self.request("thumb", "/api/feedback", body, task.user)
        with self._lock:
            self.summary.thumbs_acknowledged += 1
            self.summary.thumbs["up" if value > 0 else "down"] += 1

    def _fail(self, step: str, message: str) -> None:
        with self._lock:
            self.summary.failures[step] += 1
            if len(self.summary.errors) < 10:
                self.summary.errors.append(f"{step}: {message}")

    def run(self, *, progress: bool = True) -> SimulationSummary:
        from tqdm import tqdm

        start = time.monotonic()
        try:
            users = self.sign_up()
        except RequestFailed as exc:
            raise SimulationError(f"cannot open sessions: {exc}") from exc
        tasks = self.plan(users)
        bar = tqdm(total=len(tasks), desc="simulate", unit="task", disable=not progress)
        try:
            with ThreadPoolExecutor(self.config.concurrency) as pool:
                for _ in pool.map(self.run_task, tasks):
                    bar.update(1)
                    bar.set_postfix(
                        votes=self.summary.votes_acknowledged,
                        failed=sum(self.summary.failures.values()),
                    )
        finally:
            bar.close()
        self.summary.seconds = time.monotonic() - start
        return self.summary


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text[:200]


def simulate(
    url: str,
    oracle: Oracle,
    prompts: Sequence[str],
    config: SimulationConfig,
    *,
    progress: bool = True,
) -> SimulationSummary:
    """Run the scripted users against the server at `url` and return what happened."""
    timeout = httpx.Timeout(config.request_timeout_s, connect=10.0)
    limits = httpx.Limits(max_connections=config.concurrency + 2)
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, limits=limits) as client:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as exc:
            raise SimulationError(f"no rlhf-chat server answers at {url}: {exc}") from exc
        return Simulator(client, oracle, prompts, config).run(progress=progress)
