"""Online backups of the database, and putting one back.

`backup_database` copies a database that others keep writing to, with SQLite's
backup API in one step: under WAL a reader does not block writers, so the copy is
one consistent snapshot of committed transactions. The copy is a single file (its
journal mode set back to DELETE), written beside its destination and renamed, so a
crash never leaves half a backup under the final name.

`restore_database` checks a backup (`PRAGMA integrity_check`, and that it is this
application's database), moves the current database and its WAL aside, then renames a
fresh copy into place. A stale WAL must never meet the restored file: SQLite would
replay it into the wrong database.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from storage.errors import StoreError

SIDE_FILES = ("-wal", "-shm")
REQUIRED_TABLES = {"users", "messages", "model_versions"}


class BackupError(StoreError):
    """A backup that cannot be taken, is damaged, or is not this application's database."""


def backup_database(db_path: str | Path, dest_path: str | Path) -> Path:
    """Copy the database at `db_path` into the single file `dest_path` (replaced if present)."""
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(db_path, timeout=30)
    copy = sqlite3.connect(tmp)
    try:
        source.backup(copy)  # pages=-1: the whole database in one step, one snapshot
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise BackupError(f"could not back up {db_path}: {exc}") from exc
    finally:
        copy.close()
        source.close()
    _fsync(tmp)
    os.replace(tmp, dest)
    _fsync(dest.parent)
    return dest


def integrity_problem(path: str | Path) -> str | None:
    """None when `path` is an intact database of this application, else what is wrong."""
    if not Path(path).is_file():
        return f"{path} does not exist"
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a readable SQLite database ({exc})"
    if rows != ["ok"]:
        return f"{path} fails the integrity check: {'; '.join(rows[:5])}"
    missing = REQUIRED_TABLES - tables
    if missing:
        return f"{path} is not an rlhf-chat database (no {', '.join(sorted(missing))} table)"
    return None


def restore_database(backup: str | Path, db_path: str | Path) -> Path | None:
    """Put a copy of `backup` in place of `db_path`; returns where the old database went
    (`chat.db.before-restore-<time>`, with its WAL beside it), or None if there was none.

    The caller makes sure nothing has the database open."""
    problem = integrity_problem(backup)
    if problem:
        raise BackupError(f"not restoring: {problem}")
    db = Path(db_path)
    incoming = db.with_name(db.name + ".restoring")
    backup_database(backup, incoming)
    aside = None
    if db.exists():
        _checkpoint(db)
        aside = db.with_name(f"{db.name}.before-restore-{timestamp()}")
        os.replace(db, aside)
    for suffix in SIDE_FILES:  # whatever the checkpoint left stays with the old database
        side = Path(f"{db}{suffix}")
        if side.exists():
            if aside is not None:
                os.replace(side, Path(f"{aside}{suffix}"))
            else:
                side.unlink()
    os.replace(incoming, db)
    _fsync(db.parent)
    return aside


def timestamp() -> str:
    """UTC time as it appears in backup names: 20260102T030405Z (sorts by time)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so the file alone is the whole database."""
    try:
        conn = sqlite3.connect(db, timeout=10)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        pass  # a damaged database is moved aside as it is, its WAL with it


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)
