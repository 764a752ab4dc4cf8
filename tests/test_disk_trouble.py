"""Disk trouble: a full disk or a read-only database. Votes fail at once with a clear
503, chat keeps answering (unsaved, and says so), and once space or write access
returns votes land again and no acknowledged vote is missing.

Full disk: the data directory is a small tmpfs mounted for the test and filled while a
real server process runs on it (mounting needs root; elsewhere it skips). Read-only:
a filesystem cannot be remounted read-only under open files, so the services run in
process on a store whose connection SQLite opened read-only (`mode=ro`).
"""

import os
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.server_process import running_server

pytestmark = pytest.mark.e2e

FAST_VOTES = {  # and chats: 30 battles are 60 answers, the default chat limit
    "RLHF_CHAT_ARENA_VOTES_PER_WINDOW": "100000",
    "RLHF_CHAT_SERVING_CHATS_PER_WINDOW": "100000",
    "RLHF_CHAT_BACKUP_ENABLED": "false",
}
HANG = 15.0  # seconds: a refusal slower than this counts as a hang


@contextmanager
def small_disk(path: Path, size: str = "32M"):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; removing it gives the space back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing has nothing to flush
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
        try:
            while True:  # the last few KiB too, so that no write of SQLite's can fit
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


class Client:
    """One user's session on the server, with the votes it got acknowledged."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        token = self.http.post("/api/session").json()["user_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.acknowledged: dict[int, str] = {}

    def battles(self, n: int) -> list[int]:
        return [
            self.http.post(
                "/api/battles", json={"messages": [{"role": "user", "content": f"q{i}"}]}
            ).json()["battle_id"]
            for i in range(n)
        ]

    def vote(self, battle_id: int, outcome: str = "a") -> httpx.Response:
        start = time.monotonic()
        response = self.http.post(f"/api/battles/{battle_id}/vote", json={"outcome": outcome})
        assert time.monotonic() - start < HANG, "a vote on a broken disk hung"
        if response.status_code == 200:
            self.acknowledged[battle_id] = outcome
        return response

    def chat(self, text: str, *, stream: bool = False) -> httpx.Response:
        return self.http.post(
            "/api/chat",
            params={"stream": "true"} if stream else None,
            json={"messages": [{"role": "user", "content": text}]},
        )


def stored_votes(data_dir: Path) -> dict[int, str]:
    conn = sqlite3.connect(data_dir / "chat.db")
    try:
        assert "ok" == conn.execute("PRAGMA integrity_check").fetchone()[0]
        return dict(conn.execute("SELECT id, outcome FROM battles WHERE outcome IS NOT NULL"))
    finally:
        conn.close()


def refused_until_failure(client: Client, battles: list[int]) -> httpx.Response:
    """Vote until the broken disk refuses one (SQLite may still fit a write or two into
    pages it already holds); that refusal."""
    while battles:
        response = client.vote(battles.pop(0))
        if response.status_code != 200:
            return response
    raise AssertionError("every vote was acknowledged although the disk was broken")


def assert_chat_still_answers(client: Client) -> None:
    answer = client.chat("still there?")
    assert 200 == answer.status_code
    body = answer.json()
    assert body["content"] and body["saved"] is False and body["message_id"] is None
    assert "could not be saved" in body["warning"]
    streamed = client.chat("and streaming?", stream=True)
    assert 200 == streamed.status_code
    assert '"saved": false' in streamed.text and '"delta"' in streamed.text


def test_a_full_disk_fails_votes_clearly_chat_answers_and_nothing_is_lost(tmp_path):
    with small_disk(tmp_path / "disk") as disk, running_server(disk, env=FAST_VOTES) as server:
        client = Client(server.url)
        battles = client.battles(30)
        for battle_id in battles[:5]:
            assert 200 == client.vote(battle_id).status_code
        pending = battles[5:]

        filler = fill(disk)
        refused = refused_until_failure(client, pending)
        assert 503 == refused.status_code
        message = refused.json()["error"]
        assert "disk full" in message and "nothing was saved" in message
        assert 503 == client.vote(pending.pop(0)).status_code  # and again: not a one-off
        assert_chat_still_answers(client)
        assert 200 == httpx.get(f"{server.url}/healthz").status_code

        os.remove(filler)
        for battle_id in pending:
            assert 200 == client.vote(battle_id).status_code
        answer = client.chat("back to normal?").json()
        assert answer["saved"] is True and answer["message_id"] is not None

        stored = stored_votes(disk)
        lost = {b for b in client.acknowledged if stored.get(b) != client.acknowledged[b]}
        print(
            f"disk full: {len(battles)} votes attempted, {len(client.acknowledged)} "
            f"acknowledged, {len(stored)} stored, {len(lost)} lost, "
            f"{len(battles) - len(client.acknowledged)} refused with 503"
        )
        assert set() == lost
        assert len(client.acknowledged) >= 25


def test_a_read_only_database_fails_votes_clearly_and_chat_answers(tmp_path):
    from sqlite_utils import Database

    from app.arena import ArenaService
    from app.chat import ChatService
    from app.config import ArenaConfig, ServingConfig
    from app.errors import InputError
    from app.serving.scripted import ScriptedBackend
    from storage import Store

    store = Store(tmp_path / "chat.db")
    chat = ChatService(store, ScriptedBackend(), ServingConfig())
    arena = ArenaService(chat, ArenaConfig(votes_per_window=1000))
    user = store.create_user().id
    ask = [{"role": "user", "content": "hello"}]
    battles = [arena.battle(user, ask)[1].id for _ in range(3)]
    arena.vote(user, battles[0], "a")

    writable = store._local.db  # this thread's connection; swap in a read-only one
    store._local.db = Database(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True))
    start = time.monotonic()
    with pytest.raises(InputError) as refused:
        arena.vote(user, battles[1], "b")
    assert time.monotonic() - start < HANG
    assert 503 == refused.value.status
    assert "read-only" in refused.value.message and "nothing was saved" in refused.value.message
    with pytest.raises(InputError) as no_battle:
        arena.battle(user, ask)  # a battle that cannot be stored cannot be voted on
    assert 503 == no_battle.value.status
    turn, answer = chat.answer(user, ask)
    assert turn.text and answer is None  # answered, unsaved

    store._local.db.conn.close()
    store._local.db = writable
    arena.vote(user, battles[1], "b")
    assert {battles[0]: "a", battles[1]: "b"} == {
        b: store.get_battle(b).outcome for b in battles[:2]
    }
    assert "ok" == store.db.execute("PRAGMA integrity_check").fetchone()[0]
    store.close()
