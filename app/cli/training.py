"""`rlhf-chat train`, `reward` and `ppo`: training from the shell. A cycle goes through
`trainer.schedule`; the reward model alone and PPO alone through `trainer.jobs`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.cli.common import add_common, launched_processes
from app.config import Config


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run training cycles: once, or on the configured schedule",
        description="One cycle: feedback -> reward model -> PPO -> gate -> publish -> promote. "
        "A running server notices a version promoted here within serving.version_poll_seconds.",
    )
    add_common(p)
    p.add_argument("--once", action="store_true", help="run one cycle now and exit")
    p.add_argument("--force", action="store_true", help="train even without enough new feedback")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace, config: Config) -> int:
    import threading

    from trainer.schedule import TrainingBusy, TrainingScheduler

    if launched_processes() > 1:
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
    from trainer.jobs import launched_rank
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


def add_reward(sub: argparse._SubParsersAction) -> None:
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
    add_common(train)
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
    add_common(evaluate)
    evaluate.add_argument("--version", metavar="NAME", help="a reward version (default: live)")
    evaluate.add_argument(
        "--all", action="store_true", help="score every pair, not only the held-out ones"
    )
    evaluate.set_defaults(handler=_reward_eval)


def _reward_train(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    from storage import Store
    from trainer.jobs import JobFailed, TrainingSkipped, train_reward

    store = Store(config.storage.db_path)
    bar = tqdm(desc="reward model", unit="step", total=0)

    def progress(step: int, total: int) -> None:
        bar.total = total
        bar.update(step - bar.n)

    try:
        outcome = train_reward(
            store,
            config.model,
            config.reward,
            data_dir=config.storage.data_dir,
            progress=progress,
        )
    except TrainingSkipped as exc:
        print(f"skipped: {exc}")
        return 0
    except JobFailed as exc:
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

    from storage import Store
    from trainer.jobs import JobFailed, evaluate_reward

    store = Store(config.storage.db_path)
    try:
        report = evaluate_reward(store, config.reward, version=args.version, every_pair=args.all)
    except JobFailed as exc:
        print(f"rlhf-chat reward eval: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(report))
    return 0


def add_ppo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ppo",
        help="run LoRA PPO rounds alone and write the adapter",
        description="Warm-start from the live adapter (or a fresh LoRA on the base model), run "
        "PPO rounds against the live reward model or a reward function, and write the new "
        "adapter. Nothing is published: `rlhf-chat train` gates and ships.",
    )
    add_common(p)
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
    from tqdm import tqdm

    from storage import Store
    from trainer.jobs import JobFailed, run_ppo_job

    store = Store(config.storage.db_path)
    bar = tqdm(total=config.ppo.rounds, desc="ppo", unit="round")

    def progress(stats: Any) -> None:
        bar.update(1)
        bar.write(stats.summary())

    try:
        job = run_ppo_job(
            store,
            config.model,
            config.ppo,
            config.reward,
            data_dir=config.storage.data_dir,
            reward_spec=args.reward,
            prompts_file=args.prompts_file,
            out=args.out,
            progress=progress,
        )
    except JobFailed as exc:
        print(f"rlhf-chat ppo: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        store.close()
    print(f"adapter written to {job.adapter_dir} (warm-started from {job.live}; not published)")
    return 0
