"""`rlhf-chat simulate` and `rlhf-chat bench`: scripted voters through the HTTP API, and
the benchmarks of a source checkout's bench/ folder."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.config import Config


def _source_checkout() -> Path | None:
    """The repository root when this runs from a source checkout (one with bench/)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "bench" / "__init__.py").exists() else None


def _importable_checkout() -> Path | None:
    """Put the checkout's root on sys.path, so `bench.*` modules (benchmarks, example
    oracles) import from anywhere."""
    root = _source_checkout()
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="scripted users that chat, thumb and vote through the HTTP API",
        description="Each simulated user opens a session, starts blind battles and votes "
        "with noisy Bradley-Terry choices from an oracle's scores "
        "(P(A) = sigmoid((s_A - s_B) / noise)), and thumbs chat answers up or down against "
        "the running median score. Only the HTTP API is used; 429s are retried.",
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:7860")
    p.add_argument(
        "--oracle",
        required=True,
        metavar="MODULE:FUNC",
        help="FUNC(prompt, answer) -> float, higher is better; e.g. bench.oracles:friendliness",
    )
    p.add_argument("--users", type=int, default=10, help="simulated users (sessions)")
    p.add_argument("--votes", type=int, default=100, help="battles to vote on, in all")
    p.add_argument("--chats", type=int, help="chats to thumb, in all (default: votes / 4)")
    p.add_argument("--noise", type=float, default=1.0, help="choice noise, in oracle units")
    p.add_argument("--tie-margin", type=float, default=0.0, help="tie when |s_A - s_B| <= this")
    p.add_argument("--both-bad-below", type=float, help="both bad when both scores are below")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompts", metavar="FILE", help="one prompt a line, or JSONL (default: bench prompts)"
    )
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length asked for")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(handler=_simulate, config=None, data_dir=None)


def _simulate(args: argparse.Namespace, config: Config) -> int:
    import json

    from app.simulate import (
        SimulationConfig,
        SimulationError,
        load_oracle,
        load_prompts,
        simulate,
    )

    _importable_checkout()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        settings = SimulationConfig(
            users=args.users,
            votes=args.votes,
            chats=args.votes // 4 if args.chats is None else args.chats,
            noise=args.noise,
            tie_margin=args.tie_margin,
            both_bad_below=args.both_bad_below,
            seed=args.seed,
            concurrency=args.concurrency,
            max_new_tokens=args.max_new_tokens,
        )
        summary = simulate(args.url, load_oracle(args.oracle), load_prompts(args.prompts), settings)
    except SimulationError as exc:
        print(f"rlhf-chat simulate: {exc}", file=sys.stderr)
        return 1
    print(summary.text())
    if args.json:
        Path(args.json).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 1 if summary.failures else 0


BENCHMARKS = {
    "serving": "tokens/s through the app against raw generate, and concurrency scaling",
    "votes": "votes/s and vote latency with 32 concurrent voters; acknowledged votes lost",
    "ppo": "PPO round timings",
    "loop": "K training cycles on simulated votes; oracle win rate of each version vs base",
}


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run a benchmark (from a source checkout)",
        description="Benchmarks live in the source checkout's bench/ folder; each prints "
        "ratios measured in one run and writes a report. "
        + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items())
        + ". `rlhf-chat bench NAME --help` lists a benchmark's own flags.",
    )
    p.add_argument("name", choices=list(BENCHMARKS), help="which benchmark")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="...", help="its flags")
    p.set_defaults(handler=_bench, config=None, data_dir=None)


def _bench(args: argparse.Namespace, config: Config) -> int:
    import importlib
    import runpy

    root = _importable_checkout()
    if root is None:
        print("rlhf-chat bench: the benchmarks need a source checkout (bench/)", file=sys.stderr)
        return 1
    prog = f"rlhf-chat bench {args.name}"
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.name in ("loop", "votes"):
        return importlib.import_module(f"bench.{args.name}").main(args.bench_args, prog=prog)
    sys.argv = [prog, *args.bench_args]  # the older benchmarks are scripts
    try:
        runpy.run_path(str(root / "bench" / f"{args.name}_bench.py"), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0
