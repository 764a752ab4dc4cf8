"""What every command shares: the --config and --data-dir flags, the handler type, and
how many processes a launcher started."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from app.config import Config

Handler = Callable[[argparse.Namespace, Config], int]


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="data directory (default ./data or $RLHF_CHAT_DATA)"
    )


def launched_processes() -> int:
    """WORLD_SIZE as `accelerate launch` / `torchrun` set it; 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))
