"""The votes benchmark: sustained votes/s and vote latency with many concurrent voters,
and whether every acknowledged vote is in the database.

    rlhf-chat bench votes --out DIR [--voters 32] [--votes-per-voter 20]

Starts `rlhf-chat serve --backend scripted` (canned answers: the votes are measured,
not the model) on a free port with a fresh data directory (DIR/data) and the per-user
vote limit lifted, so the limiter does not set the pace. Every voter is one session;
first each opens its battles, then all vote at once as fast as the server answers.
Reported: votes/s over the voting phase, p50/p99 latency of a vote, and the number of
acknowledged votes (2xx) missing from the database or stored with another outcome,
which must be 0. Writes DIR/votes.json and DIR/vote_latency.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.server import running_server

OUTCOMES = ("a", "b", "tie", "both_bad")


def build_parser(prog: str = "rlhf-chat bench votes") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="report directory")
    p.add_argument("--voters", type=int, default=32, help="concurrent voters (default 32)")
    p.add_argument("--votes-per-voter", type=int, default=20, help="votes each (default 20)")
    p.add_argument("--seed", type=int, default=0)
    return p


def open_battles(url: str, n: int) -> tuple[dict[str, str], list[int]]:
    """A new session and `n` battles it may vote on."""
    with httpx.Client(base_url=url, timeout=120) as http:
        token = http.post("/api/session").json()["user_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = {"messages": [{"role": "user", "content": "Say hello."}], "max_new_tokens": 8}
        ids = [
            http.post("/api/battles", json=body, headers=headers).json()["battle_id"]
            for _ in range(n)
        ]
    return headers, ids


def vote_all(
    url: str, voters: list[tuple[dict[str, str], list[int]]], seed: int
) -> tuple[float, list[float], dict[int, str], int]:
    """Every voter votes on its battles at once. -> (seconds, latencies, acknowledged
    {battle id: outcome}, failed requests)"""
    latencies: list[float] = []
    acknowledged: dict[int, str] = {}
    failed = [0]
    lock = threading.Lock()
    start_line = threading.Barrier(len(voters) + 1)

    def voter(i: int, headers: dict[str, str], battle_ids: list[int]) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(base_url=url, timeout=120) as http:
            start_line.wait()
            for battle_id in battle_ids:
                outcome = rng.choice(OUTCOMES)
                t0 = time.perf_counter()
                try:
                    ok = http.post(
                        f"/api/battles/{battle_id}/vote", json={"outcome": outcome}, headers=headers
                    ).is_success
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if ok:
                        acknowledged[battle_id] = outcome
                    else:
                        failed[0] += 1

    threads = [
        threading.Thread(target=voter, args=(i, h, ids), daemon=True)
        for i, (h, ids) in enumerate(voters)
    ]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies, acknowledged, failed[0]


def missing_votes(db_path: Path, acknowledged: dict[int, str]) -> int:
    """Acknowledged votes that are not in the database with their outcome."""
    from storage import NotFound, Store

    store = Store(db_path)
    try:
        missing = 0
        for battle_id, outcome in acknowledged.items():
            try:
                stored = store.get_battle(battle_id)
            except NotFound:
                missing += 1
                continue
            missing += stored.outcome != outcome or stored.voted_at is None
        return missing
    finally:
        store.close()


def write_plot(out: Path, latencies: list[float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.array(latencies) * 1000, bins=50)
    ax.set(xlabel="vote latency (ms)", ylabel="votes", title="Vote latency")
    fig.tight_layout()
    path = out / "vote_latency.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None, *, prog: str = "rlhf-chat bench votes") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.voters < 1 or args.votes_per_voter < 1:
        print(f"{prog}: --voters and --votes-per-voter must be at least 1", file=sys.stderr)
        return 2
    data_dir = args.out / "data"
    if (data_dir / "chat.db").exists():
        print(
            f"{prog}: {data_dir} is not fresh; remove it or choose another --out", file=sys.stderr
        )
        return 2
    env = {
        "RLHF_CHAT_SCHEDULE_ENABLED": "false",
        "RLHF_CHAT_ARENA_VOTES_PER_WINDOW": "1000000000",
    }
    with running_server(data_dir, backend="scripted", env=env) as server:
        voters = [open_battles(server.url, args.votes_per_voter) for _ in range(args.voters)]
        seconds, latencies, acknowledged, failed = vote_all(server.url, voters, args.seed)
        missing = missing_votes(data_dir / "chat.db", acknowledged)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    result: dict[str, Any] = {
        "voters": args.voters,
        "votes_sent": len(latencies),
        "votes_acknowledged": len(acknowledged),
        "votes_failed": failed,
        "seconds": round(seconds, 3),
        "votes_per_second": round(len(acknowledged) / seconds, 1),
        "latency_ms_p50": round(float(p50), 1),
        "latency_ms_p99": round(float(p99), 1),
        "acknowledged_missing_from_db": missing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "votes.json").write_text(json.dumps(result, indent=2) + "\n")
    plot = write_plot(args.out, latencies)
    print(
        f"{result['votes_acknowledged']}/{result['votes_sent']} votes acknowledged by "
        f"{args.voters} concurrent voters: {result['votes_per_second']} votes/s, latency p50 "
        f"{result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms; acknowledged "
        f"but missing from the database: {missing}"
    )
    print(f"wrote {args.out / 'votes.json'}, {plot}")
    return 0 if missing == 0 and failed == 0 else 1


if __name__ == "__main__":  # python -m bench.votes, from the repository root
    sys.exit(main())
