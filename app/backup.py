"""Backups of the running server's database, and what `rlhf-chat restore` checks.

`Backups` takes an online backup (storage's `backup_database`) every
`backup.interval_minutes` into `<data_dir>/backups/chat-<UTC time>.db`, keeps the last
`backup.keep`, and, with `backup.hub_repo` set, copies each one to `hub/chat.db` for a
`huggingface_hub.CommitScheduler` that pushes it to a Hub dataset repo (the repo's
history keeps the older ones). A Space's disk is lost on every restart, so
`restore_from_hub` starts a server with no database from the latest pushed backup.

A running server holds `DataDirLock` on `<data_dir>/server.lock`; `rlhf-chat restore`
refuses while anyone holds it, since replacing a database under an open connection
loses writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import BackupConfig
from storage.backup import BackupError, backup_database, restore_database, timestamp

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, restore trusts the user
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

BACKUP_DIR = "backups"
HUB_DIR = "hub"  # inside BACKUP_DIR: the one file the CommitScheduler pushes
HUB_FILE = "chat.db"
LOCK_FILE = "server.lock"


class Backups:
    """Periodic backups of one database, kept on disk and optionally pushed to the Hub."""

    def __init__(
        self,
        db_path: Path,
        config: BackupConfig,
        *,
        stamp: Callable[[], str] = timestamp,
        hub_scheduler: Callable[..., Any] | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self.folder = self.db_path.parent / BACKUP_DIR
        self.last_error: str | None = None
        self._stamp = stamp
        self._make_scheduler = hub_scheduler
        self._scheduler: Any = None
        self._push: Any = None  # the Future of the latest push
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one backup at a time

    def take(self) -> Path:
        """One backup now; returns its path. Safe while the server writes."""
        with self._lock:
            path = backup_database(self.db_path, self.folder / f"chat-{self._stamp()}.db")
            self.prune()
            if self._scheduler is not None:
                self._stage_for_hub(path)
        log.info("database backed up to %s", path)
        return path

    def on_disk(self) -> list[Path]:
        """The backups on disk, oldest first."""
        return sorted(self.folder.glob("chat-*.db"))

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep` backups; returns what was deleted."""
        old = self.on_disk()[: -self.config.keep]
        for path in old:
            path.unlink(missing_ok=True)
        return old

    # -- the schedule -------------------------------------------------------------------

    def start(self) -> None:
        if self.config.interval_minutes <= 0:
            return
        if self.config.hub_repo:
            self._start_hub()
        self._thread = threading.Thread(target=self._run, name="backups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the schedule; with a Hub repo, push one last backup (a Space's disk is lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._scheduler is not None:
            try:
                self.take()
                self._push.result(timeout=120)
            except Exception:
                log.exception("the last backup before shutdown was not pushed")
            self._scheduler.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_minutes * 60):
            try:
                self.take()
                self.last_error = None
            except Exception as exc:  # the chat goes on; the Dashboard and logs say why
                self.last_error = f"backup failed: {exc}"
                log.exception("backup failed; will try again")

    # -- the Hub ------------------------------------------------------------------------

    def _start_hub(self) -> None:
        make = self._make_scheduler
        if make is None:
            from huggingface_hub import CommitScheduler

            make = CommitScheduler
        try:
            self._scheduler = make(
                repo_id=self.config.hub_repo,
                repo_type="dataset",
                folder_path=self.folder / HUB_DIR,
                every=max(self.config.interval_minutes, 1),
                private=True,
                token=self.config.hub_token or None,
                allow_patterns=[HUB_FILE],
            )
        except Exception as exc:  # keep backing up locally
            self.last_error = f"cannot push backups to {self.config.hub_repo}: {exc}"
            log.exception("cannot push backups to %s", self.config.hub_repo)

    def _stage_for_hub(self, backup: Path) -> None:
        """Copy a backup to the file the CommitScheduler pushes, and push it now."""
        folder = self.folder / HUB_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{HUB_FILE}.tmp"
        shutil.copyfile(backup, tmp)
        with self._scheduler.lock:  # never swap the file while it is being uploaded
            os.replace(tmp, folder / HUB_FILE)
        self._push = self._scheduler.trigger()


def restore_from_hub(
    config: BackupConfig, db_path: Path, *, download: Callable[..., str] | None = None
) -> bool:
    """Start from the Hub's latest backup when there is no database yet; True if restored.

    A repo without a backup is a first start; any other failure stops the start, since
    serving from an empty database would soon push it over the real backup."""
    if not (config.hub_repo and config.restore_on_start) or Path(db_path).exists():
        return False
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if download is None:
        from huggingface_hub import hf_hub_download

        download = hf_hub_download
    try:
        try:
            path = download(
                config.hub_repo, HUB_FILE, repo_type="dataset", token=config.hub_token or None
            )
        except LocalEntryNotFoundError as exc:  # the Hub was unreachable: not "no backup"
            raise ConnectionError(str(exc)) from exc
    except (EntryNotFoundError, RepositoryNotFoundError):
        log.info("no backup in %s yet: starting with an empty database", config.hub_repo)
        return False
    except Exception as exc:
        raise BackupError(
            f"could not fetch the latest backup from {config.hub_repo} ({exc}); fix the "
            "token or network, or set backup.restore_on_start = false to start empty"
        ) from exc
    restore_database(path, db_path)
    log.info("database restored from the latest backup in %s", config.hub_repo)
    return True


class DataDirLock:
    """An advisory lock on `<data_dir>/server.lock`, held by a running server."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._file: Any = None

    def acquire(self) -> bool:
        """Take the lock; False (and a warning) when another server holds it."""
        if fcntl is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held open for the life of the server
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            log.warning("another server is using %s", self.path.parent)
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def data_dir_in_use(data_dir: Path) -> bool:
    """Whether a server holds the data directory's lock now."""
    lock = DataDirLock(data_dir)
    if not lock.path.exists() or fcntl is None:
        return False
    if lock.acquire():
        lock.release()
        return False
    return True
