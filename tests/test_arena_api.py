"""The arena's HTTP API: in process on the scripted backend, and end to end on the tiny
model in a real server process."""

import math
import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import load_config
from app.server import create_app
from tests.server_process import running_server

HI = {"messages": [{"role": "user", "content": "hi"}]}


def make_app(tmp_path, **env):
    config = load_config(
        env={"RLHF_CHAT_DATA": str(tmp_path), "RLHF_CHAT_SERVING_BACKEND": "scripted", **env}
    )
    return create_app(config)


@pytest.fixture
def app(tmp_path):
    application = make_app(tmp_path)
    yield application
    application.close()


@pytest.fixture
def client(app):
    return TestClient(app.fastapi)


def session(client):
    body = client.post("/api/session").json()
    return {"Authorization": f"Bearer {body['user_token']}"}, body["user_id"]


def battle(client, auth):
    response = client.post("/api/battles", json=HI, headers=auth)
    assert 200 == response.status_code, response.text
    return response.json()


def test_battle_hides_versions_until_the_vote(client, app):
    auth, _ = session(client)
    body = battle(client, auth)
    assert {"battle_id", "a", "b"} == set(body)
    assert [{"message_id", "content"}] * 2 == [set(body["a"]), set(body["b"])]
    assert ["You said: hi"] * 2 == [body["a"]["content"], body["b"]["content"]]
    stored = app.store.get_battle(body["battle_id"])
    assert (body["a"]["message_id"], body["b"]["message_id"], None) == (
        stored.message_a_id,
        stored.message_b_id,
        stored.outcome,
    )
    vote = client.post(
        f"/api/battles/{body['battle_id']}/vote", json={"outcome": "tie"}, headers=auth
    )
    assert 200 == vote.status_code
    assert {
        "battle_id": body["battle_id"],
        "outcome": "tie",
        "version_a": "base",
        "version_b": "base",
        "pairing": "live_two_samples",
    } == vote.json()
    stored = app.store.get_battle(body["battle_id"])
    assert ("tie", True) == (stored.outcome, stored.voted_at is not None)


def test_candidate_battle_reveals_both_versions(client, app):
    app.store.add_version("policy", "v1", path="/adapters/v1")
    app.backend.load("v1", "/adapters/v1")
    auth, _ = session(client)
    body = battle(client, auth)
    reveal = client.post(
        f"/api/battles/{body['battle_id']}/vote", json={"outcome": "a"}, headers=auth
    ).json()
    assert ("candidate_vs_live", {"v1", "base"}) == (
        reveal["pairing"],
        {reveal["version_a"], reveal["version_b"]},
    )


def test_refused_votes_change_nothing(client, app):
    auth, _ = session(client)
    other, _ = session(client)
    battle_id = battle(client, auth)["battle_id"]
    url = f"/api/battles/{battle_id}/vote"
    before = app.store.get_battle(battle_id)
    refused = [
        (url, {"outcome": "a"}, other, 403),
        ("/api/battles/999/vote", {"outcome": "a"}, auth, 404),
        (url, {"outcome": "best"}, auth, 400),
        (url, {}, auth, 400),
        ("/api/battles/x/vote", {"outcome": "a"}, auth, 400),
        (url, {"outcome": "a"}, {}, 401),
    ]
    for path, payload, headers, status in refused:
        r = client.post(path, json=payload, headers=headers)
        assert (status, True) == (r.status_code, "error" in r.json()), (path, payload)
    assert before == app.store.get_battle(battle_id)
    assert 200 == client.post(url, json={"outcome": "b"}, headers=auth).status_code
    voted = app.store.get_battle(battle_id)
    again = client.post(url, json={"outcome": "a"}, headers=auth)
    assert (409, "already has a vote") == (again.status_code, again.json()["error"][-18:])
    assert voted == app.store.get_battle(battle_id)
    assert "b" == voted.outcome


def test_voting_too_fast_is_429(tmp_path):
    app = make_app(
        tmp_path, RLHF_CHAT_ARENA_VOTES_PER_WINDOW="2", RLHF_CHAT_ARENA_VOTE_WINDOW_S="3600"
    )
    try:
        client = TestClient(app.fastapi)
        auth, _ = session(client)
        ids = [battle(client, auth)["battle_id"] for _ in range(3)]
        statuses = [
            client.post(f"/api/battles/{i}/vote", json={"outcome": "a"}, headers=auth).status_code
            for i in ids
        ]
        assert [200, 200, 429] == statuses
        assert ["a", "a", None] == [app.store.get_battle(i).outcome for i in ids]
        other, _ = session(client)  # the limit is per user
        assert 200 == client.post("/api/battles", json=HI, headers=other).status_code
    finally:
        app.close()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"messages": []}, 400),
        ({"messages": [{"role": "user", "content": "x" * 4001}]}, 413),
        ({"messages": [{"role": "system", "content": "obey"}]}, 400),
        ({**HI, "max_new_tokens": 0}, 400),
    ],
)
def test_bad_battle_requests_store_nothing(client, app, body, status):
    auth, _ = session(client)
    r = client.post("/api/battles", json=body, headers=auth)
    assert (status, 0, 0) == (
        r.status_code,
        app.store.count("messages"),
        app.store.count("battles"),
    )
    assert 401 == client.post("/api/battles", json=HI).status_code


def voted_battle(store, user_id, version_a, version_b, outcome):
    conversation = store.create_conversation(user_id)
    prompt = store.add_message(conversation.id, "user", "q")
    a, b = (
        store.add_message(conversation.id, "assistant", "x", parent_id=prompt.id, version=v)
        for v in (version_a, version_b)
    )
    created = store.create_battle(user_id, prompt.id, a.id, b.id, pairing="candidate_vs_live")
    store.vote_battle(created.id, user_id, outcome)


def test_leaderboard(client, app):
    assert [] == client.get("/api/leaderboard").json()
    _, user = session(client)
    app.store.add_version("policy", "v1", path="/adapters/v1")
    for outcome in ("a", "a", "a", "b", "both_bad"):
        voted_battle(app.store, user, "v1", "base", outcome)
    rows = client.get("/api/leaderboard").json()
    assert [
        ("v1", round(1000 + 400 * math.log10(3.5 / 1.5), 1), 5, 0.75),
        ("base", 1000.0, 5, 0.25),
    ] == [(r["version"], r["rating"], r["battles"], r["win_rate"]) for r in rows]
    assert [1000.0, 1000.0] == rows[1]["ci95"]
    assert rows[0]["ci95"][0] <= rows[0]["rating"] <= rows[0]["ci95"][1]


@pytest.mark.e2e
def test_battle_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    env = {"RLHF_CHAT_MODEL_SOURCE": str(tiny_model_dir)}
    with running_server(tmp_path / "data", backend="local", env=env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            token = http.post("/api/session").json()["user_token"]
            auth = {"Authorization": f"Bearer {token}"}
            request = {"messages": [{"role": "user", "content": "Hi!"}], "max_new_tokens": 8}
            created = http.post("/api/battles", json=request, headers=auth)
            assert 200 == created.status_code, created.text
            body = created.json()
            vote = http.post(
                f"/api/battles/{body['battle_id']}/vote", json={"outcome": "a"}, headers=auth
            )
            assert ("base", "base", "live_two_samples") == tuple(
                vote.json()[k] for k in ("version_a", "version_b", "pairing")
            )
            board = http.get("/api/leaderboard").json()
        conn = sqlite3.connect(server.data_dir / "chat.db")
        try:
            row = conn.execute(
                "SELECT outcome, voted_at IS NOT NULL, message_a_id, message_b_id FROM battles"
            ).fetchall()
            answers = conn.execute(
                "SELECT m.id, m.content, v.name, p.content FROM messages m"
                " JOIN messages p ON p.id = m.parent_id"
                " JOIN model_versions v ON v.id = m.model_version_id ORDER BY m.id"
            ).fetchall()
        finally:
            conn.close()
    assert [("a", 1, body["a"]["message_id"], body["b"]["message_id"])] == row
    assert [
        (body["a"]["message_id"], body["a"]["content"], "base", "Hi!"),
        (body["b"]["message_id"], body["b"]["content"], "base", "Hi!"),
    ] == sorted(answers)
    assert [("base", 1000.0, 1)] == [(r["version"], r["rating"], r["battles"]) for r in board]
