"""`rlhf-chat versions` and `rlhf-chat users`: the admin actions from the shell, through
the same service as the admin API and the Dashboard (`app.admin`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from app.cli.common import add_common
from app.config import Config


def add_versions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="list, promote or roll back model versions")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every version with its status")
    add_common(listing)
    listing.set_defaults(handler=_versions_list)
    promote = actions.add_parser("promote", help="make a version live")
    add_common(promote)
    promote.add_argument("name", help="the version to make live")
    promote.set_defaults(handler=_versions_promote)
    rollback = actions.add_parser("rollback", help="make the previous live version live again")
    add_common(rollback)
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
    from app.admin import promote_version

    return _version_action(config, lambda store: promote_version(store, None, args.name))


def _versions_rollback(args: argparse.Namespace, config: Config) -> int:
    from app.admin import rollback_version

    return _version_action(config, lambda store: rollback_version(store, None))


def _version_action(config: Config, action: Callable[[Any], str]) -> int:
    from app.errors import InputError
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


def add_users(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="list, flag, unflag users or revoke their tokens")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="users with their judgments, reports and flag")
    add_common(listing)
    listing.add_argument("--flagged", action="store_true", help="only flagged users")
    listing.set_defaults(handler=_users_list)
    for name, text in (
        ("flag", "leave a user's judgments out of training, canary judging and the leaderboard"),
        ("unflag", "count a flagged user's judgments again"),
        ("revoke", "refuse every token issued to a user so far (they sign in again)"),
    ):
        action = actions.add_parser(name, help=text)
        add_common(action)
        action.add_argument("user_id", type=int, metavar="ID", help="the user's id")
        action.set_defaults(handler=_users_action)


def _users_list(args: argparse.Namespace, config: Config) -> int:
    from app.admin import USER_COLUMNS, users_report
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
    from app.admin import revoke, set_flagged
    from app.errors import InputError
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
