"""Load (issue #9): 32 voters and 4 streaming chats against a real server on the tiny
model while a training cycle runs in it, started with `POST /api/admin/train`.

The load lasts until the cycle has finished and the server serves what it promoted (at
most LOAD_CAP_S). No request may get a 5xx or fail to connect, every acknowledged vote
must be in the database with its outcome, and the cycle must end with a recorded
outcome. The figures (votes attempted,
acknowledged, stored, lost; p50/p99 vote latency; chats) are printed (`-s`) and kept in
test-artifacts/load.json.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.votes import OUTCOMES, missing_votes
from tests.server_process import running_server
from tests.test_loop_e2e import ADMIN, tiny_loop_env

pytestmark = pytest.mark.e2e

VOTERS = 32
CHATTERS = 4
LOAD_CAP_S = 240.0  # the load stops here even if the cycle has not finished
AFTER_SWAP_S = 5.0  # and goes on this long once a promoted version is served
CYCLE_CAP_S = 300.0  # then the cycle gets this much longer to finish
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class Tally:
    """Every response's status by route, vote latencies, acknowledged votes; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int | str]] = Counter()
        self.latencies: list[float] = []
        self.acknowledged: dict[int, str] = {}
        self.votes_attempted = 0
        self.chats_ok = 0
        self.chats_failed: list[str] = []
        self.chat_versions: Counter[str] = Counter()
        self.vote_versions: Counter[str] = Counter()

    def post(self, http: httpx.Client, route: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            r = http.post(url, **kwargs)
        except httpx.HTTPError as exc:
            with self.lock:
                self.statuses[(route, type(exc).__name__)] += 1
            raise
        with self.lock:
            self.statuses[(route, r.status_code)] += 1
        return r

    def failures(self) -> dict[str, int]:
        """5xx statuses and transport errors, by route."""
        return {
            f"{route} {status}": n
            for (route, status), n in self.statuses.items()
            if isinstance(status, str) or status >= 500
        }


def session(http: httpx.Client, tally: Tally) -> dict[str, str]:
    token = tally.post(http, "session", "/api/session").json()["user_token"]
    return {"Authorization": f"Bearer {token}"}


def voter(url: str, i: int, stop: threading.Event, tally: Tally) -> None:
    """Open a battle, vote on it, again, until `stop`."""
    rng = random.Random(i)
    with httpx.Client(base_url=url, timeout=120) as http:
        headers = session(http, tally)
        while not stop.is_set():
            body = {
                "messages": [{"role": "user", "content": f"voter {i}: {rng.random():.6f}"}],
                "max_new_tokens": 4,
            }
            try:
                battle = tally.post(http, "battles", "/api/battles", json=body, headers=headers)
            except httpx.HTTPError:
                battle = None
            if battle is None or not battle.is_success:
                time.sleep(0.2)  # counted; do not spin on a server that refuses
                continue
            battle_id = battle.json()["battle_id"]
            outcome = rng.choice(OUTCOMES)
            with tally.lock:
                tally.votes_attempted += 1
            t0 = time.perf_counter()
            try:
                voted = tally.post(
                    http,
                    "vote",
                    f"/api/battles/{battle_id}/vote",
                    json={"outcome": outcome},
                    headers=headers,
                )
            except httpx.HTTPError:
                continue
            elapsed = time.perf_counter() - t0
            with tally.lock:
                tally.latencies.append(elapsed)
                if voted.is_success:
                    tally.acknowledged[battle_id] = outcome
                    reveal = voted.json()
                    tally.vote_versions.update({reveal["version_a"], reveal["version_b"]})


def chatter(url: str, i: int, stop: threading.Event, tally: Tally) -> None:
    """Streamed chats, one after another, until `stop`; ok once the stream says done."""
    with httpx.Client(base_url=url, timeout=120) as http:
        headers = session(http, tally)
        n = 0
        while not stop.is_set():
            n += 1
            body = {
                "messages": [{"role": "user", "content": f"chatter {i}, message {n}"}],
                "max_new_tokens": 8,
            }
            events = []
            try:
                with http.stream(
                    "POST", "/api/chat?stream=true", json=body, headers=headers
                ) as response:
                    with tally.lock:
                        tally.statuses[("chat", response.status_code)] += 1
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            events.append(json.loads(line[len("data: ") :]))
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.statuses[("chat", type(exc).__name__)] += 1
                    tally.chats_failed.append(repr(exc))
                continue
            done = events[-1] if events else {}
            with tally.lock:
                if done.get("done") and done.get("saved"):
                    tally.chats_ok += 1
                    tally.chat_versions[done["version"]] += 1
                else:
                    tally.chats_failed.append(f"{response.status_code}: {events[-1:]}")


def cycle_run(data_dir: Path) -> tuple[str, str | None, dict[str, Any]] | None:
    """(status, error, metrics) of the cycle run, None before it is recorded."""
    conn = sqlite3.connect(data_dir / "chat.db", timeout=30)
    try:
        row = conn.execute(
            "SELECT status, error, metrics_json FROM training_runs WHERE kind = 'cycle'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1], json.loads(row[2] or "{}"))


def seed_feedback(http: httpx.Client) -> None:
    """Enough voted battles for the cycle's reward model (tiny_loop_env's minimums)."""
    users = [{"Authorization": f"Bearer {http.post('/api/session').json()['user_token']}"}]
    users.append({"Authorization": f"Bearer {http.post('/api/session').json()['user_token']}"})
    for i in range(8):
        prompt = {"messages": [{"role": "user", "content": f"Seed {i}"}], "max_new_tokens": 4}
        battle = http.post("/api/battles", json=prompt, headers=users[i % 2]).json()
        vote = {"outcome": "a" if i % 2 else "b"}
        r = http.post(f"/api/battles/{battle['battle_id']}/vote", json=vote, headers=users[i % 2])
        assert 200 == r.status_code, r.text


def test_votes_and_chats_during_a_training_cycle(tiny_model_dir, tmp_path):
    env = {
        **tiny_loop_env(tiny_model_dir),
        "RLHF_CHAT_ARENA_VOTES_PER_WINDOW": "1000000000",  # the limiter must not set the pace
        "RLHF_CHAT_SERVING_CHATS_PER_WINDOW": "1000000000",
        # 32 battles (two answers each) and 4 chats at once: more than the default queue
        # takes, and this load is to be served, not refused with 503
        "RLHF_CHAT_SERVING_MAX_QUEUE": "128",
    }
    tally = Tally()
    stop = threading.Event()
    with running_server(tmp_path, backend="local", env=env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            seed_feedback(http)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            assert 202 == http.post("/api/admin/train", json={}, headers=admin).status_code
            threads = [
                threading.Thread(target=voter, args=(server.url, i, stop, tally), daemon=True)
                for i in range(VOTERS)
            ] + [
                threading.Thread(target=chatter, args=(server.url, i, stop, tally), daemon=True)
                for i in range(CHATTERS)
            ]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            while time.monotonic() - t0 < LOAD_CAP_S:
                run = cycle_run(tmp_path)
                if run is not None and run[0] != "running":
                    # a promoted version is swapped in under the same load
                    new = run[2].get("version") if run[2].get("outcome") == "promoted" else None
                    if new is None:
                        break
                    if new == http.get("/healthz").json()["live_version"]:
                        time.sleep(AFTER_SWAP_S)
                        break
                time.sleep(0.5)  # the cycle is another process: only the store tells
            load_s = time.monotonic() - t0
            stop.set()
            for t in threads:
                t.join(timeout=180)
            assert not any(t.is_alive() for t in threads)
            deadline = time.monotonic() + CYCLE_CAP_S
            while (run := cycle_run(tmp_path)) is None or run[0] == "running":
                assert time.monotonic() < deadline, f"the cycle did not finish: {run}"
                time.sleep(0.5)
            live = http.get("/api/version").json()["live"]
        lost = missing_votes(tmp_path / "chat.db", tally.acknowledged)
        log_tail = server.log_tail(60)

    p50, p99 = (
        np.percentile(np.array(tally.latencies) * 1000, [50, 99]) if tally.latencies else (0, 0)
    )
    report = {
        "seconds_under_load": round(load_s, 1),
        "cycle": {"status": run[0], "outcome": run[2].get("outcome"), "error": run[1]},
        "live_after": live,
        "votes_attempted": tally.votes_attempted,
        "votes_acknowledged": len(tally.acknowledged),
        "votes_stored": len(tally.acknowledged) - lost,
        "votes_lost": lost,
        "vote_latency_ms_p50": round(float(p50), 1),
        "vote_latency_ms_p99": round(float(p99), 1),
        "chats_ok": tally.chats_ok,
        "chats_failed": len(tally.chats_failed),
        "chat_versions": dict(tally.chat_versions),
        "battles_with_version": dict(tally.vote_versions),
        "failures_5xx_or_transport": tally.failures(),
        "statuses": {f"{route} {status}": n for (route, status), n in tally.statuses.items()},
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))

    assert {} == tally.failures(), log_tail
    assert 0 == lost
    assert tally.acknowledged, "no vote was acknowledged"
    assert tally.chats_ok and not tally.chats_failed, tally.chats_failed[:5]
    assert run[0] in ("succeeded", "skipped"), run  # a recorded outcome, not a crash
    if run[2].get("outcome") == "promoted":
        assert run[2]["version"] == live
