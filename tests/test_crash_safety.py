"""No acknowledged vote is ever lost: 32 voters over HTTP while the server process is
killed with SIGKILL; after a restart every vote that got a 2xx is in the database."""

import signal
import sqlite3
import threading

import httpx
import pytest

from tests.server_process import running_server

pytestmark = pytest.mark.e2e

VOTERS = 32
BATTLES_PER_VOTER = 4


def prepare(url):
    """32 users, each with battles of their own waiting for a vote."""
    voters = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(VOTERS):
            token = http.post("/api/session").json()["user_token"]
            auth = {"Authorization": f"Bearer {token}"}
            battles = [
                http.post(
                    "/api/battles",
                    json={"messages": [{"role": "user", "content": f"q{i}-{j}"}]},
                    headers=auth,
                ).json()["battle_id"]
                for j in range(BATTLES_PER_VOTER)
            ]
            voters.append((auth, battles))
    return voters


def test_sigkill_during_votes_loses_no_acknowledged_vote(tmp_path):
    acknowledged: list[tuple[int, str]] = []
    attempted = []
    enough = threading.Semaphore(0)
    lock = threading.Lock()

    def vote(url, auth, battles):
        with httpx.Client(base_url=url, timeout=30) as http:
            for n, battle_id in enumerate(battles):
                outcome = ("a", "b", "tie", "both_bad")[n % 4]
                with lock:
                    attempted.append(battle_id)
                try:
                    r = http.post(
                        f"/api/battles/{battle_id}/vote", json={"outcome": outcome}, headers=auth
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acknowledged.append((battle_id, outcome))
                    enough.release()

    with running_server(tmp_path) as server:
        voters = prepare(server.url)
        threads = [
            threading.Thread(target=vote, args=(server.url, auth, battles))
            for auth, battles in voters
        ]
        for t in threads:
            t.start()
        for _ in range(VOTERS):  # kill it mid-stream, once a quarter of the votes are in
            assert enough.acquire(timeout=120)
        server.kill(signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
    with lock:
        acked = dict(acknowledged)
    assert len(acked) >= VOTERS  # the kill came after a quarter of the votes, not before

    with running_server(tmp_path) as server:  # a restart recovers the WAL
        assert "ok" == httpx.get(f"{server.url}/healthz").json()["status"]
    conn = sqlite3.connect(tmp_path / "chat.db")
    try:
        assert [("ok",)] == conn.execute("PRAGMA integrity_check").fetchall()
        stored = dict(conn.execute("SELECT id, outcome FROM battles WHERE outcome IS NOT NULL"))
    finally:
        conn.close()
    lost = {b: o for b, o in acked.items() if stored.get(b) != o}
    print(
        f"votes attempted {len(attempted)}, acknowledged {len(acked)}, stored {len(stored)},"
        f" lost {len(lost)}"
    )
    assert {} == lost
