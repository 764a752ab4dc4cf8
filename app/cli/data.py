"""`rlhf-chat export`, `backup` and `restore`: the data, out of the store and back."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import add_common
from app.config import Config


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the training data (or every table) as JSONL",
        description="trl-pairs: prompt/chosen/rejected preference pairs; kto: "
        "prompt/completion/label unpaired examples (both TRL's conversational formats, "
        "with source, user and version on every line); raw: every row of every table "
        "with a `table` field.",
    )
    add_common(p)
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
    from trainer.jobs import export_data

    store = Store(config.storage.db_path)
    try:
        n, report = export_data(
            store, args.format, args.out, config.reward, as_trained=args.as_trained
        )
    finally:
        store.close()
    print(f"wrote {n} lines to {args.out}")
    if report is not None:
        print(report.summary())
    return 0


def add_backup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backup",
        help="back up the database now (safe while a server runs)",
        description="An online SQLite backup into DATA_DIR/backups/chat-<UTC time>.db; the "
        "newest backup.keep are kept.",
    )
    add_common(p)
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


def add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="replace the database with a backup",
        description="Checks the backup (PRAGMA integrity_check), refuses while a server runs "
        "on the data directory, moves the current chat.db aside "
        "(chat.db.before-restore-<UTC time>) and puts a copy of the backup in its place.",
    )
    add_common(p)
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
