"""Online backups while the database is written to, keeping the last N, restoring one."""

import itertools
import threading
from pathlib import Path

import pytest

from app.backup import Backups, DataDirLock, data_dir_in_use, restore_from_hub
from app.cli import main
from app.config import BackupConfig, ConfigError, load_config
from storage import Store
from storage.backup import BackupError, backup_database, integrity_problem, restore_database


def test_a_backup_taken_during_writes_restores_to_a_consistent_database(tmp_path):
    store = Store(tmp_path / "chat.db")
    stop, started = threading.Event(), threading.Event()

    def write() -> None:
        while not stop.is_set():
            user = store.create_user("anon")
            conversation = store.create_conversation(user.id, title="t")
            store.add_message(conversation.id, "user", "hello")
            started.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert started.wait(30)
        before = store.count("users")
        backup = backup_database(store.path, tmp_path / "backups" / "chat-1.db")
        assert started.wait(30)
    finally:
        stop.set()
        writer.join()
    after = store.count("users")
    store.close()
    assert integrity_problem(backup) is None
    assert [backup] == list(backup.parent.iterdir())  # one self-contained file
    restored = tmp_path / "restored" / "chat.db"
    assert restore_database(backup, restored) is None
    copy = Store(restored)
    try:
        users = copy.count("users")
        assert before <= users <= after
        # every message's conversation and user came along: foreign keys hold
        assert copy.count("conversations") >= copy.count("messages") - 1
        assert [] == list(copy.db.query("PRAGMA foreign_key_check"))
    finally:
        copy.close()


def test_backups_keep_the_newest_n(tmp_path):
    store = Store(tmp_path / "chat.db")
    store.close()
    names = (f"2026010{i}T000000Z" for i in itertools.count(1))
    backups = Backups(tmp_path / "chat.db", BackupConfig(keep=2), stamp=lambda: next(names))
    taken = [backups.take() for _ in range(3)]
    assert taken[1:] == backups.on_disk()
    assert ["chat-20260102T000000Z.db", "chat-20260103T000000Z.db"] == [
        p.name for p in backups.on_disk()
    ]


def test_restore_moves_the_old_database_and_its_wal_aside(tmp_path):
    db = tmp_path / "chat.db"
    store = Store(db)
    store.create_user("anon")
    backup = backup_database(db, tmp_path / "b.db")
    store.create_user("anon")
    store.close()
    aside = restore_database(backup, db)
    assert aside.name.startswith("chat.db.before-restore-")
    assert not Path(f"{db}-wal").exists()
    for path, users in ((db, 1), (aside, 2)):
        s = Store(path)
        assert users == s.count("users")
        s.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a database" * 100, "not a readable SQLite database"), (None, "does not exist")],
)
def test_restore_refuses_what_is_not_a_good_backup(tmp_path, content, message):
    db = tmp_path / "chat.db"
    Store(db).close()
    bad = tmp_path / "bad.db"
    if content is not None:
        bad.write_bytes(content)
    with pytest.raises(BackupError, match=message):
        restore_database(bad, db)
    assert integrity_problem(db) is None  # untouched


def test_restore_refuses_another_applications_database(tmp_path):
    empty = tmp_path / "empty.db"
    backup_database(tmp_path / "missing-so-empty.db", empty)  # a valid SQLite file, no tables
    with pytest.raises(BackupError, match="not an rlhf-chat database"):
        restore_database(empty, tmp_path / "chat.db")


def test_cli_backup_then_restore(tmp_path, capsys):
    data = tmp_path / "data"
    store = Store(data / "chat.db")
    store.create_user("anon")
    store.close()
    assert 0 == main(["backup", "--data-dir", str(data)])
    backup = Path(capsys.readouterr().out.strip())
    assert backup.parent == data / "backups"
    assert 0 == main(["restore", str(backup), "--data-dir", str(data)])
    assert "the previous database is kept as" in capsys.readouterr().out
    s = Store(data / "chat.db")
    assert 1 == s.count("users")
    s.close()


def test_cli_restore_refuses_while_a_server_holds_the_data_dir(tmp_path, capsys):
    data = tmp_path / "data"
    Store(data / "chat.db").close()
    backup = backup_database(data / "chat.db", tmp_path / "b.db")
    lock = DataDirLock(data)
    assert lock.acquire()
    try:
        assert data_dir_in_use(data)
        assert 1 == main(["restore", str(backup), "--data-dir", str(data)])
        assert "a server is running" in capsys.readouterr().err
    finally:
        lock.release()
    assert not data_dir_in_use(data)


def test_a_running_server_holds_the_data_dir_until_it_closes(tmp_path):
    from app.server import create_app

    config = load_config(
        env={"RLHF_CHAT_DATA": str(tmp_path), "RLHF_CHAT_SERVING_BACKEND": "scripted"}
    )
    app = create_app(config)
    try:
        assert data_dir_in_use(tmp_path)
        assert app.backups.take().parent == tmp_path / "backups"
    finally:
        app.close()
    assert not data_dir_in_use(tmp_path)


def test_a_fresh_disk_starts_from_the_hubs_latest_backup(tmp_path):
    source = Store(tmp_path / "source.db")
    source.create_user("anon")
    source.close()
    pushed = backup_database(tmp_path / "source.db", tmp_path / "hub" / "chat.db")
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename, kwargs["repo_type"]))
        return str(pushed)

    config = BackupConfig(hub_repo="someone/backups")
    db = tmp_path / "data" / "chat.db"
    assert restore_from_hub(config, db, download=download)
    assert [("someone/backups", "chat.db", "dataset")] == asked
    assert restore_from_hub(config, db, download=download) is False  # a database exists now
    assert not restore_from_hub(BackupConfig(), tmp_path / "other.db", download=download)
    assert 1 == len(asked)


def test_an_unreachable_hub_stops_the_start_rather_than_serve_an_empty_database(tmp_path):
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the Hub and nothing in the cache")

    def nothing_yet(*args, **kwargs):
        raise EntryNotFoundError("no chat.db in the repo")

    config = BackupConfig(hub_repo="someone/backups")
    with pytest.raises(BackupError, match="restore_on_start = false"):
        restore_from_hub(config, tmp_path / "chat.db", download=unreachable)
    assert restore_from_hub(config, tmp_path / "chat.db", download=nothing_yet) is False


def test_backups_push_through_the_commit_scheduler(tmp_path):
    Store(tmp_path / "chat.db").close()
    pushes = []

    class FakeScheduler:
        def __init__(self, **kwargs):
            self.kwargs, self.lock = kwargs, threading.Lock()

        def trigger(self):
            pushes.append((self.kwargs["folder_path"] / "chat.db").read_bytes())
            return type("Done", (), {"result": lambda self, timeout=None: None})()

        def stop(self):
            pass

    config = BackupConfig(hub_repo="someone/backups", interval_minutes=60)
    backups = Backups(tmp_path / "chat.db", config, hub_scheduler=FakeScheduler)
    backups.start()
    assert ("someone/backups", "dataset") == (
        backups._scheduler.kwargs["repo_id"],
        backups._scheduler.kwargs["repo_type"],
    )
    taken = backups.take()
    assert [taken.read_bytes()] == pushes
    backups.stop()  # one last backup, pushed
    assert 2 == len(pushes)


def test_backup_settings_are_validated():
    assert 24 == load_config(env={}).backup.keep
    with pytest.raises(ConfigError, match="backup.keep"):
        load_config(env={"RLHF_CHAT_BACKUP_KEEP": "0"})
    with pytest.raises(ConfigError, match="backup.hub_repo"):
        load_config(env={"RLHF_CHAT_BACKUP_HUB_REPO": "no-owner"})
