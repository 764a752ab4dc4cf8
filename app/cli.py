"""`rlhf-chat` (also `python -m app`): the command-line entry point.

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
    p.add_argument("--backend", choices=["local", "scripted"], help="how answers are generated")
    p.set_defaults(
        handler=_serve,
        overrides=lambda a: {
            "serving.host": a.host,
            "serving.port": a.port,
            "serving.backend": a.backend,
        },
    )


def _serve(args: argparse.Namespace, config: Config) -> int:
    from app.server import serve

    serve(config)
    return 0


# -- main -------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_serve]


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
