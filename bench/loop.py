"""The loop benchmark: does the model learn what its voters want?

    rlhf-chat bench loop --oracle MODULE:FUNC --cycles K --out DIR

1. start `rlhf-chat serve` on a free port with a fresh data directory (DIR/data), the
   schedule off and an admin token of its own;
2. K times: simulated users vote in blind battles and thumb chats over HTTP (judging
   with the oracle, through `app.simulate`), then one training cycle is started with
   `POST /api/admin/train` and waited for (the run's status in the store, then
   `/api/version` for the promoted version going live);
3. stop the server, load every policy version from DIR/data and let each answer the
   held-out prompts; the oracle judges each answer against a base answer to the same
   prompt (win rate, ties half, bootstrap 95% interval over prompts; the tie share and
   the win rate over decisive pairs), with the KL to the base model, the median length
   and the no-EOS rate at the serving length; each cycle's reward model is checked
   against the oracle on the same answers;
4. write DIR/report.json, PNG plots and DIR/report.md.

Settings for the server come from the caller's environment and `--config`, as for
`rlhf-chat serve`; without `--config` the product defaults apply. The measurement reads
the same configuration, and the report says which file (if any) and which `RLHF_CHAT_*`
variables were used. The train prompts
drive the voting, the held-out prompts only the measurement.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.simulate import SimulationConfig, load_oracle, load_prompts, simulate
from bench.server import Server, running_server

PROMPTS = Path(__file__).resolve().parent / "prompts"


def build_parser(prog: str = "rlhf-chat bench loop") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--oracle", required=True, metavar="MODULE:FUNC", help="FUNC(prompt, answer)")
    p.add_argument("--cycles", type=int, default=3, help="training cycles (default 3)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="report directory")
    p.add_argument("--votes-per-cycle", type=int, default=200, help="battle votes per cycle")
    p.add_argument("--chats-per-cycle", type=int, help="thumbed chats per cycle (default 1/4)")
    p.add_argument("--users", type=int, default=20, help="simulated users per cycle")
    p.add_argument("--noise", type=float, default=0.5, help="voters' noise, in oracle units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="simulated requests in flight (default 8: a battle is two answers, so 16 fill "
        "one batch of the default serving.max_batch_size)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=40,
        help="serving length: answers in battles, chats and the measurement (default 40, "
        "the benchmark's budget on a 2-core CPU)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML config for the server (default: none, the defaults)"
    )
    p.add_argument("--prompts", type=Path, default=PROMPTS / "train.jsonl", metavar="FILE")
    p.add_argument(
        "--heldout-prompts", type=Path, default=PROMPTS / "heldout.jsonl", metavar="FILE"
    )
    p.add_argument("--heldout", type=int, default=0, help="use the first N held-out prompts")
    p.add_argument("--samples", type=int, default=2, help="answers per held-out prompt (default 2)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--cycle-timeout", type=float, default=7200, help="seconds per cycle at most")
    return p


@dataclass
class Loop:
    """A running server and what the benchmark needs to drive it."""

    server: Server
    admin_token: str
    oracle: Any
    prompts: list[str]
    args: argparse.Namespace

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def run_cycle(self, k: int) -> dict[str, Any]:
        """Votes, then one training cycle, waited for; the cycle's row of the report."""
        a = self.args
        chats = a.chats_per_cycle if a.chats_per_cycle is not None else a.votes_per_cycle // 4
        sim = SimulationConfig(
            users=a.users,
            votes=a.votes_per_cycle,
            chats=chats,
            noise=a.noise,
            seed=a.seed * 1000 + k,
            concurrency=a.concurrency,
            max_new_tokens=a.max_new_tokens,
        )
        start = time.monotonic()
        summary = simulate(self.server.url, self.oracle, self.prompts, sim)
        print(summary.text(), flush=True)
        vote_seconds = time.monotonic() - start
        run = self._train(k)
        metrics = run.metrics
        row = {
            "cycle": k,
            "seconds": round(time.monotonic() - start - vote_seconds, 1),
            "reward_model_accuracy": metrics.get("reward_model_accuracy"),
            "votes": summary.votes_acknowledged,
            "thumbs": summary.thumbs_acknowledged,
            "vote_seconds": round(vote_seconds, 1),
            "status": run.status,
            "outcome": metrics.get("outcome") or run.status,
            "version": metrics.get("version"),
            "reward_model": metrics.get("reward_model"),
            "mean_reward": metrics.get("mean_reward"),
            "kl": metrics.get("kl"),
            "error": run.error,
            "simulation": summary.as_dict(),
        }
        print(
            f"cycle {k}: {row['outcome']} {row['version'] or ''} in {row['seconds']}s "
            f"({run.error or 'ok'})",
            flush=True,
        )
        if row["outcome"] == "promoted":
            self._wait_live(row["version"])
        return row

    def _train(self, k: int) -> Any:
        from storage import Store

        store = Store(self.server.data_dir / "chat.db")
        try:
            before = max((r.id for r in store.runs("cycle", limit=1)), default=0)
            with httpx.Client(base_url=self.server.url, timeout=60) as http:
                answer = http.post("/api/admin/train", json={"force": True}, headers=self.admin)
            if answer.status_code != 202:
                raise RuntimeError(f"cycle {k} did not start: {answer.status_code} {answer.text}")
            deadline = time.monotonic() + self.args.cycle_timeout
            while time.monotonic() < deadline:
                runs = [r for r in store.runs("cycle", limit=5) if r.id > before]
                if runs and runs[-1].status != "running":
                    return runs[-1]
                if self.server.process.poll() is not None:
                    raise RuntimeError(f"the server died:\n{self.server.log_tail()}")
                time.sleep(2)  # training runs in a child process: poll its recorded status
        finally:
            store.close()
        raise TimeoutError(f"cycle {k} did not finish in {self.args.cycle_timeout:.0f}s")

    def _wait_live(self, version: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            while time.monotonic() < deadline:
                if http.get("/api/version").json().get("live") == version:
                    return
                time.sleep(1)  # the server's version watcher polls the store too
        raise TimeoutError(f"{version} was promoted but not served within {timeout:.0f}s")

    def leaderboard(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.server.url}/api/leaderboard", timeout=60).json()


def server_env(
    admin_token: str, environ: dict[str, str], max_new_tokens: int | None = None
) -> dict[str, str]:
    """What the benchmark's server must have: its admin token, no scheduled cycles, a
    quick version watcher, and the benchmark's answer length as the serving length (the
    gate measures length and missing EOS there), unless the caller set them."""
    env = {"RLHF_CHAT_AUTH_ADMIN_TOKEN": admin_token, "RLHF_CHAT_SCHEDULE_ENABLED": "false"}
    if "RLHF_CHAT_SERVING_VERSION_POLL_SECONDS" not in environ:
        env["RLHF_CHAT_SERVING_VERSION_POLL_SECONDS"] = "1"
    if max_new_tokens and "RLHF_CHAT_SERVING_MAX_NEW_TOKENS" not in environ:
        env["RLHF_CHAT_SERVING_MAX_NEW_TOKENS"] = str(max_new_tokens)
    return env


def main(argv: list[str] | None = None, *, prog: str = "rlhf-chat bench loop") -> int:
    import os

    args = build_parser(prog).parse_args(argv)
    if min(args.cycles, args.samples, args.users) < 1 or args.votes_per_cycle < 0:
        print(f"{prog}: --cycles, --samples and --users must be at least 1", file=sys.stderr)
        return 2
    oracle = load_oracle(args.oracle)
    prompts = load_prompts(args.prompts)
    heldout = load_prompts(args.heldout_prompts)[: args.heldout or None]
    data_dir = args.out / "data"
    if (data_dir / "chat.db").exists():
        print(
            f"{prog}: {data_dir} is not fresh; remove it or choose another --out", file=sys.stderr
        )
        return 2
    token = secrets.token_urlsafe(32)
    server_args = ["--config", args.config] if args.config else []
    cycles = []
    env = server_env(token, dict(os.environ), args.max_new_tokens)
    with running_server(data_dir, env=env, args=server_args) as s:
        print(f"server at {s.url}, data in {data_dir}", flush=True)
        print(f"config: {args.config or 'none (the product defaults)'}", flush=True)
        loop = Loop(s, token, oracle, prompts, args)
        for k in range(1, args.cycles + 1):
            cycles.append(loop.run_cycle(k))
        leaderboard = loop.leaderboard()
    from bench.evaluate import evaluate_versions

    report = evaluate_versions(data_dir, oracle, heldout, cycles, args)
    report["leaderboard"] = leaderboard
    from bench.report import write_report

    paths = write_report(args.out, report)
    print_summary(report)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def print_summary(report: dict[str, Any]) -> None:
    print(
        "version     win rate vs base   95% interval     ties  decisive  KL to base"
        "  length ratio  no EOS"
    )
    for v in report["versions"]:
        lo, hi = v["ci95"]
        decisive = v.get("decisive_win_rate")
        print(
            f"{v['name']:10}  {v['oracle_win_rate_vs_base']:>16.3f}   [{lo:.3f}, {hi:.3f}]"
            f"  {v['tie_share']:>5.0%}  {'n/a' if decisive is None else f'{decisive:.3f}':>8}"
            f"  {v['kl_to_base']:>10.3f}  {v['median_length_ratio']:>12.2f}"
            f"  {v['no_eos_rate']:>6.0%}"
        )
    for c in report["cycles"]:
        acc = c["reward_model_accuracy"]
        agree = c.get("reward_model_oracle_agreement")
        print(
            f"cycle {c['cycle']}: {c['outcome']:9} {c['votes']} votes, {c['seconds']:.0f}s "
            f"training; reward model held-out accuracy "
            f"{'n/a' if acc is None else f'{acc:.3f}'}, agreement with oracle "
            f"{'n/a' if agree is None else f'{agree:.3f}'}"
        )


if __name__ == "__main__":  # python -m bench.loop, from the repository root
    sys.exit(main())
