"""`rlhf-chat` (also `python -m app`): the command-line entry point, one module per
command group:

    serve     serve
    training  train, reward, ppo        (through `trainer.schedule` and `trainer.jobs`)
    admin     versions, users           (through `app.admin`)
    data      export, backup, restore
    bench     simulate, bench

Each subcommand parses its flags, builds the config once (TOML, environment, flags)
and calls into the package that does the work. Heavy imports happen inside the
handlers so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app.cli.admin import add_users, add_versions
from app.cli.bench import add_bench, add_simulate
from app.cli.common import launched_processes
from app.cli.data import add_backup, add_export, add_restore
from app.cli.serve import add_serve
from app.cli.training import add_ppo, add_reward, add_train
from app.config import Config, ConfigError, load_config

log = logging.getLogger("rlhf_chat")


def _config_from(args: argparse.Namespace, overrides: dict[str, Any]) -> Config:
    return load_config(args.config, overrides={"storage.data_dir": args.data_dir, **overrides})


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_serve,
    add_train,
    add_versions,
    add_reward,
    add_export,
    add_ppo,
    add_simulate,
    add_bench,
    add_backup,
    add_restore,
    add_users,
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
    if launched_processes() > 1 and args.command != "train":
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
