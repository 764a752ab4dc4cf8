"""The HTTP API in process (FastAPI's test client) on the scripted backend."""

import json

import pytest
from fastapi.testclient import TestClient

from app.config import load_config
from app.server import create_app

HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def app(tmp_path):
    config = load_config(
        env={"RLHF_CHAT_DATA": str(tmp_path), "RLHF_CHAT_SERVING_BACKEND": "scripted"}
    )
    application = create_app(config)
    yield application
    application.close()


@pytest.fixture
def client(app):
    return TestClient(app.fastapi)


def session(client):
    token = client.post("/api/session").json()["user_token"]
    return {"Authorization": f"Bearer {token}"}


def test_health_and_version(client):
    assert {"status": "ok", "live_version": "base"} == client.get("/healthz").json()
    body = client.get("/api/version").json()
    assert ("base", None) == (body["live"], body["candidate"])
    assert [{"name": "base", "status": "live"}] == body["versions"]


def test_chat_stores_question_and_answer_with_version(client, app):
    auth = session(client)
    body = client.post("/api/chat", json=HELLO, headers=auth).json()
    assert {"content": "You said: hello", "version": "base"} == {
        k: body[k] for k in ("content", "version")
    }
    answer = app.store.get_message(body["message_id"])
    assert ("assistant", "base") == (answer.role, app.store.message_version_name(answer.id))
    follow = client.post(
        "/api/chat",
        json={
            "conversation_id": body["conversation_id"],
            "messages": [
                *HELLO["messages"],
                {"role": "assistant", "content": body["content"]},
                {"role": "user", "content": "again"},
            ],
        },
        headers=auth,
    ).json()
    assert body["conversation_id"] == follow["conversation_id"]
    chain = app.store.conversation_messages(body["conversation_id"])
    assert ["hello", "You said: hello", "again", "You said: again"] == [m.content for m in chain]
    assert [None, 1, 2, 3] == [m.parent_id for m in chain]


def test_streamed_chat_sends_deltas_then_done(client, app):
    auth = session(client)
    with client.stream("POST", "/api/chat?stream=true", json=HELLO, headers=auth) as response:
        assert "text/event-stream" in response.headers["content-type"]
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert "You said: hello" == "".join(e.get("delta", "") for e in events)
    done = events[-1]
    assert (True, "base") == (done["done"], done["version"])
    assert "You said: hello" == app.store.get_message(done["message_id"]).content


def test_thumbs_replace_and_clear(client, app):
    auth = session(client)
    message_id = client.post("/api/chat", json=HELLO, headers=auth).json()["message_id"]
    for value in (1, -1):
        r = client.post(
            "/api/feedback",
            json={"message_id": message_id, "kind": "thumb", "value": value},
            headers=auth,
        )
        assert 200 == r.status_code
    assert [("thumb", -1)] == [(f.kind, f.value) for f in app.store.message_feedback(message_id)]
    client.post(
        "/api/feedback", json={"message_id": message_id, "kind": "thumb", "value": 0}, headers=auth
    )
    assert [] == app.store.message_feedback(message_id)
    r = client.post(
        "/api/feedback",
        json={"message_id": message_id, "kind": "edit", "text": "Hi!"},
        headers=auth,
    )
    assert r.json()["feedback_id"] is not None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "user", "content": "   "}]}, 400, "empty"),
        ({"messages": [{"role": "user", "content": "x" * 4001}]}, 413, "too long"),
        (
            {
                "messages": [
                    {"role": "system", "content": "obey"},
                    {"role": "user", "content": "hi"},
                ]
            },
            400,
            "role",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 10**9},
            400,
            "max_new_tokens",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
            400,
            "temperature",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "conversation_id": 999},
            404,
            "no conversation",
        ),
        ({"messages": "hi"}, 400, "non-empty list"),
    ],
)
def test_bad_chat_requests_are_refused_and_store_nothing(client, app, body, status, message):
    auth = session(client)
    r = client.post("/api/chat", json=body, headers=auth)
    assert status == r.status_code
    assert message in r.json()["error"]
    assert 0 == app.store.count("messages")


def test_nan_temperature_and_non_json(client):
    auth = session(client)
    r = client.post("/api/chat", content=b'{"messages": [], "temperature": NaN}', headers=auth)
    assert 400 == r.status_code
    r = client.post("/api/chat", content=b"\xff\xfe not json", headers=auth)
    assert (400, True) == (r.status_code, "not valid JSON" in r.json()["error"])


def test_identity_is_required_and_unforgeable(client):
    assert 401 == client.post("/api/chat", json=HELLO).status_code
    bad = {"Authorization": "Bearer eyJ1c2VyX2lkIjoxfQ.forged"}
    assert 401 == client.post("/api/chat", json=HELLO, headers=bad).status_code


def test_feedback_errors(client):
    auth, other = session(client), session(client)
    body = client.post("/api/chat", json=HELLO, headers=auth).json()
    cases = [
        ({"message_id": 999, "kind": "thumb", "value": 1}, auth, 404),
        ({"message_id": body["message_id"], "kind": "thumb", "value": 5}, auth, 400),
        ({"message_id": body["message_id"], "kind": "vote", "value": 1}, auth, 400),
        ({"message_id": body["message_id"] - 1, "kind": "thumb", "value": 1}, auth, 400),
        ({"message_id": body["message_id"], "kind": "thumb", "value": 1}, other, 403),
        ({"message_id": body["message_id"], "kind": "edit", "text": ""}, auth, 400),
        ({"message_id": "1", "kind": "thumb", "value": 1}, auth, 400),
    ]
    for payload, headers, status in cases:
        r = client.post("/api/feedback", json=payload, headers=headers)
        assert (status, True) == (r.status_code, "error" in r.json()), payload


def test_oversized_body_is_413(client):
    auth = session(client)
    r = client.post(
        "/api/chat", content=b"x" * 1_100_000, headers={**auth, "content-type": "application/json"}
    )
    assert 413 == r.status_code


def test_page_is_served(client):
    r = client.get("/")
    assert 200 == r.status_code
    assert "<html" in r.text.lower()
