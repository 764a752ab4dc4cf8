"""`rlhf-chat` (also `python -m app`): the command-line entry point.

Each subcommand parses its flags, builds the config once (TOML, environment, flags)
and calls into the package that does the work. Heavy imports happen inside the
handlers so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.config import Config, ConfigError, load_config

log = logging.getLogger("rlhf_chat")

Handler = Callable[[argparse.Namespace, Config], int]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="data directory (default ./data or $RLHF_CHAT_DATA)"
    )


def _config_from(args: argparse.Namespace, overrides: dict[str, Any]) -> Config:
    return load_config(args.config, overrides={"storage.data_dir": args.data_dir, **overrides})


# -- serve ------------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the chat page and the HTTP API")
    _common(p)
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument(
        "--backend", choices=["local", "remote", "scripted"], help="how answers are generated"
    )
    p.add_argument(
        "--remote-url", metavar="URL", help="the TGI or vLLM server for --backend remote"
    )
    p.add_argument("--remote-kind", choices=["tgi", "vllm"], help="what runs at --remote-url")
    p.set_defaults(
        handler=_serve,
        overrides=lambda a: {
            "serving.host": a.host,
            "serving.port": a.port,
            "serving.backend": a.backend,
            "serving.remote_url": a.remote_url,
            "serving.remote_kind": a.remote_kind,
        },
    )


def _serve(args: argparse.Namespace, config: Config) -> int:
    from app.server import serve

    serve(config)
    return 0


# -- reward -----------------------------------------------------------------------------


def _add_reward(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reward",
        help="train or evaluate the reward model alone",
        description="Train the reward model on every judgment in the store, or measure the "
        "live one on the held-out conversations.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train",
        help="train, save and promote a reward model (a recorded skip if data is short)",
    )
    _common(train)
    train.add_argument("--epochs", type=int, help="passes over the pairs (reward.epochs)")
    train.add_argument(
        "--min-pairs", type=int, help="skip below this many pairs (reward.min_pairs)"
    )
    train.add_argument("--device", help="cpu, cuda[:N] or mps (reward.device)")
    train.set_defaults(
        handler=_reward_train,
        overrides=lambda a: {
            "reward.epochs": a.epochs,
            "reward.min_pairs": a.min_pairs,
            "reward.device": a.device,
        },
    )
    evaluate = actions.add_parser(
        "eval", help="held-out accuracy and calibration of the live (or a named) reward model"
    )
    _common(evaluate)
    evaluate.add_argument("--version", metavar="NAME", help="a reward version (default: live)")
    evaluate.add_argument(
        "--all", action="store_true", help="score every pair, not only the held-out ones"
    )
    evaluate.set_defaults(handler=_reward_eval)


def _reward_train(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    from storage import Store
    from trainer.errors import TrainingError, TrainingSkipped
    from trainer.models import ModelSourceError, resolve_base_model
    from trainer.reward import train_reward_model

    store = Store(config.storage.db_path)
    bar = tqdm(desc="reward model", unit="step", total=0)

    def progress(step: int, total: int) -> None:
        bar.total = total
        bar.update(step - bar.n)

    try:
        base = resolve_base_model(config.model.source, config.storage.data_dir)
        outcome = train_reward_model(
            store,
            config.reward,
            data_dir=config.storage.data_dir,
            base_model=base,
            progress=progress,
        )
    except TrainingSkipped as exc:
        print(f"skipped: {exc}")
        return 0
    except (ModelSourceError, TrainingError) as exc:
        print(f"rlhf-chat reward train: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        store.close()
    m = outcome.metrics
    print(
        f"{outcome.version} is live: held-out accuracy {m.get('heldout_accuracy', 'n/a')} "
        f"on {m.get('heldout_n', 0)} pairs, trained on {m['train_pairs']} pairs "
        f"in {m['train_seconds']:.0f}s; saved in {outcome.path}"
    )
    print(outcome.report.summary())
    return 0


def _reward_eval(args: argparse.Namespace, config: Config) -> int:
    import json

    from storage import NotFound, Store
    from trainer.data import build_dataset
    from trainer.errors import RewardModelError
    from trainer.reward import evaluate_pairs, latest_reward_model, load_reward_model

    store = Store(config.storage.db_path)
    try:
        if args.version:
            version = store.get_version(args.version)
            model = load_reward_model(version.path or "", device=config.reward.device)
        else:
            model = latest_reward_model(store, device=config.reward.device)
        data = build_dataset(
            store,
            heldout_fraction=config.reward.heldout_fraction,
            max_user_share=config.reward.max_user_weight_share,
            seed=config.reward.seed,
        )
    except (NotFound, RewardModelError) as exc:
        print(f"rlhf-chat reward eval: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    pairs = data.heldout_pairs + (data.train_pairs if args.all else [])
    metrics = evaluate_pairs(model, pairs)
    print(json.dumps({"version": model.name, "split": "all" if args.all else "heldout", **metrics}))
    return 0


# -- export -----------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the training data (or every table) as JSONL",
        description="trl-pairs: prompt/chosen/rejected preference pairs; kto: "
        "prompt/completion/label unpaired examples (both TRL's conversational formats, "
        "with source, user and version on every line); raw: every row of every table "
        "with a `table` field.",
    )
    _common(p)
    p.add_argument("--format", required=True, choices=["trl-pairs", "kto", "raw"])
    p.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write")
    p.add_argument(
        "--as-trained",
        action="store_true",
        help="write what the reward model trains on: flagged users and repeated votes "
        "left out, per-user weights applied (default: every judgment as made)",
    )
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace, config: Config) -> int:
    from storage import Store
    from trainer.export import export

    store = Store(config.storage.db_path)
    try:
        n, report = export(
            store,
            args.format,
            args.out,
            heldout_fraction=config.reward.heldout_fraction,
            max_user_share=config.reward.max_user_weight_share,
            seed=config.reward.seed,
            as_trained=args.as_trained,
        )
    finally:
        store.close()
    print(f"wrote {n} lines to {args.out}")
    if report is not None:
        print(report.summary())
    return 0


# -- train ------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run training cycles: once, or on the configured schedule",
        description="One cycle: feedback -> reward model -> PPO -> gate -> publish -> promote. "
        "A running server notices a version promoted here within serving.version_poll_seconds.",
    )
    _common(p)
    p.add_argument("--once", action="store_true", help="run one cycle now and exit")
    p.add_argument("--force", action="store_true", help="train even without enough new feedback")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace, config: Config) -> int:
    import threading

    from trainer.schedule import TrainingBusy, TrainingScheduler

    if _launched_processes() > 1:
        return _train_launched(args, config)
    scheduler = TrainingScheduler(config.storage.db_path, config.training(), config.schedule)
    if not args.once:
        scheduler.start()
        print(f"training on schedule ({scheduler.trigger()}); Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            scheduler.shutdown()
        return 0
    try:
        result = scheduler.run_once(force=args.force)
    except TrainingBusy as exc:
        print(f"rlhf-chat train: {exc}", file=sys.stderr)
        return 1
    print(result.get("summary") or result.get("error"))
    return 0 if result["status"] != "failed" else 1


def _train_launched(args: argparse.Namespace, config: Config) -> int:
    """One data-parallel cycle in each process of `accelerate launch` or `torchrun`."""
    from trainer.distributed import launched_rank
    from trainer.schedule import TrainingBusy, run_launched

    if not args.once:
        print(
            "rlhf-chat train: under a multi-process launch run one cycle with --once "
            "(and schedule the launch itself)",
            file=sys.stderr,
        )
        return 2
    try:
        result = run_launched(config.storage.db_path, config.training(), force=args.force)
    except TrainingBusy as exc:
        print(f"rlhf-chat train: {exc}", file=sys.stderr)
        return 1
    if launched_rank() == 0:
        print(result.get("summary") or result.get("error"))
    return 0 if result["status"] != "failed" else 1


def _launched_processes() -> int:
    """WORLD_SIZE as `accelerate launch` / `torchrun` set it; 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# -- versions ---------------------------------------------------------------------------


def _add_versions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="list, promote or roll back model versions")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every version with its status")
    _common(listing)
    listing.set_defaults(handler=_versions_list)
    promote = actions.add_parser("promote", help="make a version live")
    _common(promote)
    promote.add_argument("name", help="the version to make live")
    promote.set_defaults(handler=_versions_promote)
    rollback = actions.add_parser("rollback", help="make the previous live version live again")
    _common(rollback)
    rollback.set_defaults(handler=_versions_rollback)


def _versions_list(args: argparse.Namespace, config: Config) -> int:
    from storage import Store

    store = Store(config.storage.db_path)
    try:
        for v in store.versions(None):
            reasons = "; ".join(v.metrics.get("gate_reasons") or [])
            print(f"{v.name:14} {v.kind:7} {v.status:12} {v.created_at}  {reasons}".rstrip())
    finally:
        store.close()
    return 0


def _versions_promote(args: argparse.Namespace, config: Config) -> int:
    from app.admin_api import promote_version

    return _version_action(config, lambda store: promote_version(store, None, args.name))


def _versions_rollback(args: argparse.Namespace, config: Config) -> int:
    from app.admin_api import rollback_version

    return _version_action(config, lambda store: rollback_version(store, None))


def _version_action(config: Config, action: Callable[[Any], str]) -> int:
    from app.chat import InputError
    from storage import Store

    store = Store(config.storage.db_path)
    try:
        print(f"live: {action(store)}")
        return 0
    except InputError as exc:
        print(f"rlhf-chat versions: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()


# -- users ------------------------------------------------------------------------------


def _add_users(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="list, flag, unflag users or revoke their tokens")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="users with their judgments, reports and flag")
    _common(listing)
    listing.add_argument("--flagged", action="store_true", help="only flagged users")
    listing.set_defaults(handler=_users_list)
    for name, text in (
        ("flag", "leave a user's judgments out of training, canary judging and the leaderboard"),
        ("unflag", "count a flagged user's judgments again"),
        ("revoke", "refuse every token issued to a user so far (they sign in again)"),
    ):
        action = actions.add_parser(name, help=text)
        _common(action)
        action.add_argument("user_id", type=int, metavar="ID", help="the user's id")
        action.set_defaults(handler=_users_action)


def _users_list(args: argparse.Namespace, config: Config) -> int:
    from app.moderation import USER_COLUMNS, users_report
    from storage import Store

    store = Store(config.storage.db_path)
    try:
        print("\t".join(USER_COLUMNS))
        for row in users_report(store, flagged_only=args.flagged):
            print("\t".join(str(row[c]) for c in USER_COLUMNS))
    finally:
        store.close()
    return 0


def _users_action(args: argparse.Namespace, config: Config) -> int:
    from app.chat import InputError
    from app.moderation import revoke, set_flagged
    from storage import Store

    store = Store(config.storage.db_path)
    try:
        if args.action == "revoke":
            done = revoke(store, args.user_id)
            print(f"user {done['user_id']}: tokens revoked (token version {done['token_version']})")
        else:
            set_flagged(store, args.user_id, args.action == "flag")
            print(f"user {args.user_id}: {'flagged' if args.action == 'flag' else 'unflagged'}")
        return 0
    except InputError as exc:
        print(f"rlhf-chat users: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()


# -- ppo --------------------------------------------------------------------------------


def _add_ppo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ppo",
        help="run LoRA PPO rounds alone and write the adapter",
        description="Warm-start from the live adapter (or a fresh LoRA on the base model), run "
        "PPO rounds against the live reward model or a reward function, and write the new "
        "adapter. Nothing is published: `rlhf-chat train` gates and ships.",
    )
    _common(p)
    p.add_argument(
        "--reward",
        metavar="MODULE:FUNC",
        help="FUNC(prompts, completions) -> list[float] replaces the reward model",
    )
    p.add_argument("--rounds", type=int, help="PPO rounds (ppo.rounds)")
    p.add_argument(
        "--prompts-file",
        metavar="FILE",
        help='one prompt per line (.jsonl: a string, {"prompt": ...} or {"messages": [...]} '
        "per line); default: user turns of the stored conversations",
    )
    p.add_argument("--device", help="cpu, cuda[:N] or mps (ppo.device)")
    p.add_argument(
        "--out", metavar="DIR", help="where the adapter goes (default DATA_DIR/runs/RUN_ID/adapter)"
    )
    p.set_defaults(
        handler=_ppo, overrides=lambda a: {"ppo.rounds": a.rounds, "ppo.device": a.device}
    )


def _ppo(args: argparse.Namespace, config: Config) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from storage import Store
    from trainer.models import ModelSourceError, resolve_base_model
    from trainer.ppo import PPOError, build_policy, read_prompts, run_ppo

    store = Store(config.storage.db_path)
    try:
        reward_fn = _ppo_reward_function(args.reward, config, store)
        prompts = read_prompts(args.prompts_file) if args.prompts_file else store.prompt_contexts()
        if not prompts:
            raise PPOError("no prompts: the store has no conversations yet; pass --prompts-file")
        base = resolve_base_model(config.model.source, config.storage.data_dir)
        live = store.live_version("policy")
        policy, tokenizer = build_policy(base, config.ppo, adapter_dir=live.path or None)
        run_id = store.start_run("ppo").id
        out = Path(args.out or config.storage.data_dir / "runs" / str(run_id) / "adapter")
        bar = tqdm(total=config.ppo.rounds, desc="ppo", unit="round")

        def progress(stats: Any) -> None:
            bar.update(1)
            bar.write(stats.summary())

        try:
            result = run_ppo(
                policy,
                tokenizer,
                prompts,
                reward_fn,
                config.ppo,
                store=store,
                run_id=run_id,
                progress=progress,
                output_dir=out,
            )
        except BaseException as exc:
            store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
        metrics = {**result.final.metrics(), "adapter_dir": str(out), "live": live.name}
        n_examples = config.ppo.rounds * config.ppo.rollout_batch_size
        store.finish_run(run_id, "succeeded", n_examples=n_examples, metrics=metrics)
    except (ValueError, PPOError, ModelSourceError) as exc:
        print(f"rlhf-chat ppo: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"adapter written to {out} (warm-started from {live.name}; not published)")
    return 0


def _ppo_reward_function(spec: str | None, config: Config, store: Any) -> Any:
    """`--reward MODULE:FUNC` (modules in the working directory import too), else the live
    reward model."""
    import os

    from trainer.ppo import PPOError, load_reward_function

    if spec:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return load_reward_function(spec)
    try:
        from trainer.errors import RewardModelError
        from trainer.reward import latest_reward_model
    except ImportError as exc:
        raise PPOError(f"no reward model available ({exc}); pass --reward MODULE:FUNC") from exc
    try:
        return latest_reward_model(store, device=config.reward.device).score
    except RewardModelError as exc:
        raise PPOError(f"{exc}, or pass --reward MODULE:FUNC") from exc


# -- backup and restore -----------------------------------------------------------------


def _add_backup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backup",
        help="back up the database now (safe while a server runs)",
        description="An online SQLite backup into DATA_DIR/backups/chat-<UTC time>.db; the "
        "newest backup.keep are kept.",
    )
    _common(p)
    p.set_defaults(handler=_backup)


def _backup(args: argparse.Namespace, config: Config) -> int:
    from app.backup import Backups
    from storage.backup import BackupError

    if not config.storage.db_path.exists():
        print(f"rlhf-chat backup: no database at {config.storage.db_path}", file=sys.stderr)
        return 1
    try:
        print(Backups(config.storage.db_path, config.backup).take())
    except BackupError as exc:
        print(f"rlhf-chat backup: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="replace the database with a backup",
        description="Checks the backup (PRAGMA integrity_check), refuses while a server runs "
        "on the data directory, moves the current chat.db aside "
        "(chat.db.before-restore-<UTC time>) and puts a copy of the backup in its place.",
    )
    _common(p)
    p.add_argument("file", metavar="FILE", help="a backup, e.g. DATA_DIR/backups/chat-*.db")
    p.set_defaults(handler=_restore)


def _restore(args: argparse.Namespace, config: Config) -> int:
    from app.backup import data_dir_in_use
    from storage.backup import BackupError, restore_database

    if data_dir_in_use(config.storage.data_dir):
        print(
            f"rlhf-chat restore: a server is running on {config.storage.data_dir}; stop it first",
            file=sys.stderr,
        )
        return 1
    try:
        aside = restore_database(args.file, config.storage.db_path)
    except BackupError as exc:
        print(f"rlhf-chat restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file} into {config.storage.db_path}")
    if aside is not None:
        print(f"the previous database is kept as {aside}")
    return 0


# -- simulate and bench -----------------------------------------------------------------


def _source_checkout() -> Path | None:
    """The repository root when this runs from a source checkout (one with bench/)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "bench" / "__init__.py").exists() else None


def _importable_checkout() -> Path | None:
    """Put the checkout's root on sys.path, so `bench.*` modules (benchmarks, example
    oracles) import from anywhere."""
    root = _source_checkout()
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def _add_simulate(sub: argparse._SubParsersAction) -> None:
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


def _add_bench(sub: argparse._SubParsersAction) -> None:
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


# -- main -------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve,
    _add_train,
    _add_versions,
    _add_reward,
    _add_export,
    _add_ppo,
    _add_simulate,
    _add_bench,
    _add_backup,
    _add_restore,
    _add_users,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-chat",
        description="A chat app that learns from its users' feedback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _launched_processes() > 1 and args.command != "train":
        print(
            f"rlhf-chat {args.command}: only `rlhf-chat train --once` runs under a "
            "multi-process launch; run this command directly",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides = args.overrides(args) if hasattr(args, "overrides") else {}
        config = _config_from(args, overrides)
    except ConfigError as exc:
        print(f"rlhf-chat: configuration error: {exc}", file=sys.stderr)
        return 2
    return args.handler(args, config)


if __name__ == "__main__":
    sys.exit(main())
