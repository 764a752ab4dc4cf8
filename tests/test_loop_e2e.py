"""The whole loop through a running server on the tiny model: feedback over HTTP, a
cycle started with the admin API, a new version promoted and swapped in, new answers
carrying it; then a rollback over the admin API."""

import sqlite3
import time

import httpx
import pytest

from tests.server_process import running_server

pytestmark = pytest.mark.e2e
ADMIN = "test-admin-token-of-at-least-32-characters"


def tiny_loop_env(model_dir):
    return {
        "RLHF_CHAT_MODEL_SOURCE": str(model_dir),
        "RLHF_CHAT_AUTH_ADMIN_TOKEN": ADMIN,
        "RLHF_CHAT_SCHEDULE_ENABLED": "false",
        "RLHF_CHAT_SERVING_VERSION_POLL_SECONDS": "0.5",
        "RLHF_CHAT_REWARD_LEARNING_RATE": "0.01",
        "RLHF_CHAT_REWARD_EPOCHS": "1",
        "RLHF_CHAT_REWARD_MIN_PAIRS": "4",
        "RLHF_CHAT_REWARD_FEATURE_LAYER": "2",  # the tiny model's last layer (linear method)
        "RLHF_CHAT_REWARD_NORMALIZE_SAMPLES": "4",
        "RLHF_CHAT_REWARD_NORMALIZE_MAX_NEW_TOKENS": "4",
        "RLHF_CHAT_PPO_ROLLOUT_BATCH_SIZE": "4",
        "RLHF_CHAT_PPO_MINIBATCH_SIZE": "2",
        "RLHF_CHAT_PPO_PPO_EPOCHS": "1",
        "RLHF_CHAT_PPO_MAX_NEW_TOKENS": "6",
        "RLHF_CHAT_PPO_GENERATION_BATCH_SIZE": "4",
        "RLHF_CHAT_CYCLE_MIN_NEW_FEEDBACK": "4",
        "RLHF_CHAT_CYCLE_PPO_ROUNDS": "1",
        "RLHF_CHAT_CYCLE_HELDOUT_PROMPTS": "2",
        "RLHF_CHAT_GATE_SAMPLES": "4",
        "RLHF_CHAT_GATE_MAX_NEW_TOKENS": "8",
        "RLHF_CHAT_GATE_NON_INFERIORITY_MARGIN": "1000",
        "RLHF_CHAT_GATE_MIN_REWARD_GAIN": "-1000",
        "RLHF_CHAT_GATE_MAX_LENGTH_DRIFT": "100",
        "RLHF_CHAT_GATE_MAX_NO_EOS_INCREASE": "1",
        "RLHF_CHAT_GATE_MIN_REWARD_AGREEMENT": "0",
    }


def cycle_finished(data_dir):
    """True once the cycle ended; fails the test at once if it ended without promoting."""
    conn = sqlite3.connect(data_dir / "chat.db")
    try:
        row = conn.execute(
            "SELECT status, error, metrics_json FROM training_runs WHERE kind = 'cycle'"
        ).fetchone()
    finally:
        conn.close()
    if row is None or row[0] == "running":
        return False
    assert "succeeded" == row[0] and '"outcome": "promoted"' in row[2], row
    return True


def wait_for(predicate, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)  # polling a training child process: there is no event to wait on
    raise TimeoutError


def test_feedback_to_a_promoted_version_and_back(tiny_model_dir, tmp_path):
    with running_server(tmp_path, backend="local", env=tiny_loop_env(tiny_model_dir)) as server:
        http = httpx.Client(base_url=server.url, timeout=120)
        users = [
            {"Authorization": f"Bearer {http.post('/api/session').json()['user_token']}"}
            for _ in range(3)
        ]
        for i in range(8):  # blind battles, then a thumb on one answer
            auth = users[i % 3]
            prompt = {
                "messages": [{"role": "user", "content": f"Tell me about topic {i}"}],
                "max_new_tokens": 6,
            }
            battle = http.post("/api/battles", json=prompt, headers=auth).json()
            vote = {"outcome": "a" if i % 2 else "b"}
            voted = http.post(f"/api/battles/{battle['battle_id']}/vote", json=vote, headers=auth)
            assert 200 == voted.status_code
            thumb = {"message_id": battle["a"]["message_id"], "kind": "thumb", "value": 1}
            assert 200 == http.post("/api/feedback", json=thumb, headers=auth).status_code
        assert 401 == http.post("/api/admin/train").status_code
        assert (
            403
            == http.post("/api/admin/train", headers={"Authorization": "Bearer wrong"}).status_code
        )
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert 202 == http.post("/api/admin/train", json={}, headers=admin).status_code
        wait_for(lambda: cycle_finished(server.data_dir))
        wait_for(lambda: http.get("/api/version").json()["live"] == "v1", timeout=30)
        wait_for(lambda: http.get("/healthz").json()["live_version"] == "v1", timeout=30)
        chat = {"messages": [{"role": "user", "content": "And now?"}], "max_new_tokens": 4}
        assert "v1" == http.post("/api/chat", json=chat, headers=users[0]).json()["version"]
        assert {"live": "base"} == http.post("/api/admin/rollback", headers=admin).json()
        assert "base" == http.post("/api/chat", json=chat, headers=users[0]).json()["version"]
        versions = {v["name"]: v["status"] for v in http.get("/api/version").json()["versions"]}
        assert {"base": "live", "v1": "rolled_back"} == versions
