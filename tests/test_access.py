"""Access: admin actions refuse missing, wrong and non-admin credentials; nobody votes on,
rates, corrects or retries another user's items; forged tokens get 401; the chat and
vote rate limits hold per user, also under concurrent requests and across page and API."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeSerializer

from app.config import load_config
from app.identity import Identity

ADMIN = "the-admin-token-of-at-least-32-characters"
LIMIT = 3  # chats and votes per user per hour here
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_app(data_dir, **env):
    from app.server import create_app

    base = {
        "RLHF_CHAT_DATA": str(data_dir),
        "RLHF_CHAT_SERVING_BACKEND": "scripted",
        "RLHF_CHAT_SCHEDULE_ENABLED": "false",
        "RLHF_CHAT_BACKUP_INTERVAL_MINUTES": "0",
    }
    return create_app(load_config(env={**base, **env}))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = make_app(
        tmp_path_factory.mktemp("access"),
        RLHF_CHAT_AUTH_ADMIN_TOKEN=ADMIN,
        RLHF_CHAT_AUTH_ADMIN_USERS="alice",
        RLHF_CHAT_SERVING_CHATS_PER_WINDOW=str(LIMIT),
        RLHF_CHAT_SERVING_CHAT_WINDOW_S="3600",
        RLHF_CHAT_ARENA_VOTES_PER_WINDOW=str(LIMIT),
        RLHF_CHAT_ARENA_VOTE_WINDOW_S="3600",
    )
    yield application
    application.close()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app.fastapi)


@pytest.fixture(scope="module")
def secret(app):
    return app.store.path.parent.joinpath("user_token_key").read_text().strip()


@pytest.fixture(scope="module")
def identity(secret):
    return Identity(secret)


def user(client) -> SimpleNamespace:
    """A new anonymous user: its id, token and Authorization header."""
    body = client.post("/api/session").json()
    token = body["user_token"]
    return SimpleNamespace(id=body["user_id"], token=token, auth=bearer(token))


def chat(client, who) -> dict:
    response = client.post("/api/chat", json=HELLO, headers=who.auth)
    assert 200 == response.status_code, response.text
    return response.json()


def battle(client, who) -> int:
    response = client.post("/api/battles", json=HELLO, headers=who.auth)
    assert 200 == response.status_code, response.text
    return response.json()["battle_id"]


def stored_battle(app, who) -> int:
    """A battle put in the store directly: the vote limit's tests need more battles than
    the chat limit lets one user start (a battle counts as two answers)."""
    store = app.store
    conversation = store.create_conversation(who.id, title="hello")
    prompt = store.add_message(conversation.id, "user", "hello")
    a, b = (
        store.add_message(conversation.id, "assistant", text, parent_id=prompt.id, version="base")
        for text in ("one", "two")
    )
    return store.create_battle(who.id, prompt.id, a.id, b.id, pairing="live_two_samples").id


def assert_refused(response, status: int) -> None:
    assert status == response.status_code, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message.strip()


def tampered(token: str) -> str:
    """One character in the middle of the signature changed (the last base64 character
    carries padding bits: changing it may leave the signature's bytes as they were)."""
    payload, _, signature = token.rpartition(".")
    i = len(signature) // 2
    return f"{payload}.{signature[:i]}{'A' if signature[i] != 'A' else 'B'}{signature[i + 1 :]}"


# -- admin ---------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("/api/admin/train", {"force": True}),
    ("/api/admin/promote", {"version": "base"}),
    ("/api/admin/rollback", None),
]


def admin_headers(app, identity, who: str) -> dict[str, str]:
    store = app.store
    alice = store.named_user("password", "alice").id
    return {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "no scheme": {"Authorization": ADMIN},
        "basic scheme": {"Authorization": "Basic " + base64.b64encode(ADMIN.encode()).decode()},
        "other header": {"X-Admin-Token": ADMIN},
        "wrong": bearer("wrong"),
        "prefix": bearer(ADMIN[:-1]),
        "longer": bearer(ADMIN + "x"),
        "other case": bearer(ADMIN.upper()),
        "anonymous user": bearer(identity.issue(store.create_user("anon").id)),
        "anonymous user named alice": bearer(identity.issue(store.create_user("anon", "alice").id)),
        "signed-in non-admin": bearer(identity.issue(store.named_user("oauth", "bob").id)),
        "alice, tampered": bearer(tampered(identity.issue(alice))),
        "alice, another secret": bearer(Identity("another-secret").issue(alice)),
        "unknown user": bearer(identity.issue(10**6)),
    }[who]


MISSING = ["missing", "empty bearer", "no scheme", "basic scheme", "other header"]
WRONG = [
    "wrong",
    "prefix",
    "longer",
    "other case",
    "anonymous user",
    "anonymous user named alice",
    "signed-in non-admin",
    "alice, tampered",
    "alice, another secret",
    "unknown user",
]


@pytest.mark.parametrize("who", MISSING + WRONG)
def test_admin_actions_refuse_missing_wrong_and_non_admin_credentials(client, app, identity, who):
    headers = admin_headers(app, identity, who)
    before = ([(v.name, v.status) for v in app.store.versions()], len(app.store.runs()))
    for path, body in ADMIN_ROUTES:
        response = client.post(path, json=body, headers=headers)
        assert_refused(response, 401 if who in MISSING else 403)
    assert before == ([(v.name, v.status) for v in app.store.versions()], len(app.store.runs()))
    # a token in the query string is not a credential either
    assert_refused(client.post(f"/api/admin/rollback?token={ADMIN}"), 401)


def test_admin_token_and_admin_users_pass(client, app, identity):
    alice = identity.issue(app.store.named_user("password", "alice").id)
    for headers in (bearer(ADMIN), bearer(alice), {"Authorization": f"bearer  {ADMIN}"}):
        promote = client.post("/api/admin/promote", json={"version": "base"}, headers=headers)
        assert (200, {"live": "base"}) == (promote.status_code, promote.json())
        # past the credential check: refused for what is asked, not for who asks
        assert_refused(client.post("/api/admin/rollback", headers=headers), 409)
        assert_refused(client.post("/api/admin/train", json={"force": "yes"}, headers=headers), 400)


def test_admin_off_refuses_everyone(tmp_path):
    application = make_app(tmp_path)
    try:
        client = TestClient(application.fastapi)
        token = client.post("/api/session").json()["user_token"]
        for headers in ({}, bearer(""), bearer(token), bearer("anything")):
            for path, body in ADMIN_ROUTES:
                response = client.post(path, json=body, headers=headers)
                assert_refused(response, 403)
                assert "admin actions are off" in response.json()["error"]
    finally:
        application.close()


# -- another user's items -------------------------------------------------------------------


def rows_of(app, owner, answer_id: int, battle_id: int) -> tuple:
    store = app.store
    return (
        [(f.kind, f.value, f.text) for f in store.message_feedback(answer_id)],
        [
            (m.id, m.content)
            for m in store.conversation_messages(store.get_message(answer_id).conversation_id)
        ],
        store.get_battle(battle_id).outcome,
        store.db["conversations"].count_where("user_id = ?", [owner.id]),
    )


def test_a_user_cannot_touch_another_users_answers_or_battles(client, app):
    owner, intruder = user(client), user(client)
    answer = chat(client, owner)
    battle_id = battle(client, owner)
    before = rows_of(app, owner, answer["message_id"], battle_id)
    answer_id, conversation_id = answer["message_id"], answer["conversation_id"]
    attempts = [
        ("/api/feedback", {"message_id": answer_id, "kind": "thumb", "value": -1}, 403),
        ("/api/feedback", {"message_id": answer_id, "kind": "thumb", "value": 0}, 403),
        ("/api/feedback", {"message_id": answer_id, "kind": "edit", "text": "mine now"}, 403),
        ("/api/feedback", {"message_id": answer_id, "kind": "flag", "text": "spam"}, 403),
        ("/api/feedback", {"message_id": answer_id - 1, "kind": "thumb", "value": 1}, 403),
        ("/api/chat", {**HELLO, "conversation_id": conversation_id}, 403),
        (f"/api/battles/{battle_id}/vote", {"outcome": "a"}, 403),
        ("/api/battles/999999/vote", {"outcome": "a"}, 404),
        ("/api/feedback", {"message_id": 999999, "kind": "thumb", "value": 1}, 404),
    ]
    for path, body, status in attempts:
        assert_refused(client.post(path, json=body, headers=intruder.auth), status)
    assert before == rows_of(app, owner, answer_id, battle_id)
    # the owner still may: the rows were untouched, not locked
    thumb = {"message_id": answer_id, "kind": "thumb", "value": 1}
    assert 200 == client.post("/api/feedback", json=thumb, headers=owner.auth).status_code
    vote = client.post(f"/api/battles/{battle_id}/vote", json={"outcome": "b"}, headers=owner.auth)
    assert (200, "b") == (vote.status_code, vote.json()["outcome"])


def handler(app, name: str):
    """The page's event handler called `name`, as the running page has it."""
    found = [f.fn for f in app.demo.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert found, name
    return found[0]


def test_the_page_refuses_another_users_items_too(client, app, monkeypatch):
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    owner, intruder = user(client), user(client)
    answer = chat(client, owner)
    battle_id = battle(client, owner)
    before = rows_of(app, owner, answer["message_id"], battle_id)
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": answer["content"]},
    ]
    ids = [answer["message_id"] - 1, answer["message_id"]]
    conversation_id = answer["conversation_id"]

    handler(app, "thumb")(
        ids, intruder.token, gr.LikeData(None, {"index": 1, "value": "", "liked": False})
    )
    edit = gr.EditData(None, {"index": 1, "value": "mine now", "previous_value": ""})
    handler(app, "correct")(history, conversation_id, ids, intruder.token, edit)
    retry = gr.RetryData(None, {"index": 1, "value": ""})
    list(handler(app, "retry")(history, conversation_id, ids, intruder.token, 0.7, 16, retry))
    list(handler(app, "respond")("hi", history, conversation_id, ids, intruder.token, 0.7, 16))
    handler(app, "cast_vote")(battle_id, intruder.token)

    assert 5 == len(warnings), warnings
    assert all("another user" in w for w in warnings), warnings
    assert before == rows_of(app, owner, answer["message_id"], battle_id)


# -- forged tokens ---------------------------------------------------------------------------


def forged(secret: str, victim: int, kind: str) -> dict:
    good = Identity(secret).issue(victim)
    payload, _, signature = good.rpartition(".")
    other_payload = base64.urlsafe_b64encode(json.dumps({"user_id": victim + 1}).encode())
    none_jwt = b".".join(
        base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=")
        for p in ({"alg": "none", "typ": "JWT"}, {"user_id": victim})
    )
    tokens = {
        "tampered signature": tampered(good),
        "another user's payload": f"{other_payload.decode().rstrip('=')}.{signature}",
        "no signature": payload,
        "empty signature": payload + ".",
        "another secret": Identity("another-secret").issue(victim),
        "another salt": URLSafeSerializer(secret, salt="x").dumps({"user_id": victim}),
        "timestamped": TimestampSigner("another-secret").sign(str(victim)).decode(),
        "unknown user": Identity(secret).issue(10**6),
        "alg none": none_jwt.decode() + ".",
        "garbage": "garbage",
        "null": "null",
        "non-ASCII": "ünïcödé.tökén".encode(),  # as UTF-8 bytes on the wire
        "very long": "a" * 8000,
    }
    if kind in tokens:
        token = tokens[kind]
        return {
            "Authorization": b"Bearer " + token if isinstance(token, bytes) else f"Bearer {token}"
        }
    return {
        "empty": {"Authorization": "Bearer "},
        "scheme only": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": f"Basic {good}"},
        "no header": {},
        "token alone": {"Authorization": good},
    }[kind]


FORGERIES = [
    "tampered signature",
    "another user's payload",
    "no signature",
    "empty signature",
    "another secret",
    "another salt",
    "timestamped",
    "unknown user",
    "alg none",
    "garbage",
    "null",
    "non-ASCII",
    "very long",
    "empty",
    "scheme only",
    "basic scheme",
    "no header",
    "token alone",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_and_missing_tokens_get_401(client, app, secret, kind):
    victim = user(client)
    answer = chat(client, victim)
    battle_id = battle(client, victim)
    headers = forged(secret, victim.id, kind)
    tables = ("users", "conversations", "messages", "feedback")
    before = [app.store.count(t) for t in tables], app.store.get_battle(battle_id).outcome
    for path, body in [
        ("/api/chat", HELLO),
        ("/api/chat?stream=true", HELLO),
        ("/api/battles", HELLO),
        ("/api/feedback", {"message_id": answer["message_id"], "kind": "thumb", "value": -1}),
        (f"/api/battles/{battle_id}/vote", {"outcome": "a"}),
    ]:
        assert_refused(client.post(path, json=body, headers=headers), 401)
    assert before == ([app.store.count(t) for t in tables], app.store.get_battle(battle_id).outcome)


def test_the_real_token_passes(client, identity):
    """The control for the forgeries above: the same requests with the real token work."""
    victim = user(client)
    assert victim.token == identity.issue(victim.id)
    assert 200 == client.post("/api/chat", json=HELLO, headers=victim.auth).status_code


# -- rate limits -----------------------------------------------------------------------------


def test_the_vote_limit_gives_429_and_holds_per_user(client, app):
    fast, other = user(client), user(client)
    battles = [stored_battle(app, fast) for _ in range(LIMIT + 2)]
    statuses = [
        client.post(
            f"/api/battles/{b}/vote", json={"outcome": "tie"}, headers=fast.auth
        ).status_code
        for b in battles
    ]
    assert [200] * LIMIT + [429, 429] == statuses
    refused = client.post(
        f"/api/battles/{battles[-1]}/vote", json={"outcome": "a"}, headers=fast.auth
    )
    assert_refused(refused, 429)
    assert "too many votes" in refused.json()["error"]
    outcomes = [app.store.get_battle(b).outcome for b in battles]
    assert ["tie"] * LIMIT + [None, None] == outcomes
    theirs = battle(client, other)  # another user's quota is their own
    assert (
        200
        == client.post(
            f"/api/battles/{theirs}/vote", json={"outcome": "a"}, headers=other.auth
        ).status_code
    )


def test_the_chat_limit_gives_429_counts_streams_and_retries_and_holds_per_user(
    client, app, monkeypatch
):
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    fast, other = user(client), user(client)
    first = chat(client, fast)
    with client.stream("POST", "/api/chat?stream=true", json=HELLO, headers=fast.auth) as r:
        assert 200 == r.status_code
        r.read()
    # a retry on the page counts against the same quota as the API's chats
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first["content"]},
    ]
    ids = [first["message_id"] - 1, first["message_id"]]
    retry = gr.RetryData(None, {"index": 1, "value": ""})
    list(handler(app, "retry")(history, first["conversation_id"], ids, fast.token, 0.7, 16, retry))
    assert [] == warnings
    messages = app.store.count("messages")
    for path in ("/api/chat", "/api/chat?stream=true"):
        refused = client.post(path, json=HELLO, headers=fast.auth)
        assert_refused(refused, 429)
        assert f"at most {LIMIT} every 3600 seconds" in refused.json()["error"]
    list(handler(app, "retry")(history, first["conversation_id"], ids, fast.token, 0.7, 16, retry))
    assert 1 == len(warnings) and "too many messages" in warnings[0]
    assert messages == app.store.count("messages")  # nothing stored past the limit
    assert 200 == client.post("/api/chat", json=HELLO, headers=other.auth).status_code


def test_a_battle_counts_as_two_answers(client):
    """LIMIT answers: one battle (two) and a chat (three), then neither a battle nor a chat."""
    fast = user(client)
    battle(client, fast)
    chat(client, fast)
    for path in ("/api/battles", "/api/chat"):
        refused = client.post(path, json=HELLO, headers=fast.auth)
        assert_refused(refused, 429)
        assert "a battle counts as two" in refused.json()["error"]
        assert refused.headers["Retry-After"] == "3600"


def test_the_limits_hold_under_concurrent_requests(client, app):
    chatter, voter = user(client), user(client)
    battles = [stored_battle(app, voter) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        chats = list(
            pool.map(
                lambda _: client.post("/api/chat", json=HELLO, headers=chatter.auth).status_code,
                range(8),
            )
        )
        votes = list(
            pool.map(
                lambda b: (
                    client.post(
                        f"/api/battles/{b}/vote", json={"outcome": "a"}, headers=voter.auth
                    ).status_code
                ),
                battles,
            )
        )
    assert ([200] * LIMIT + [429] * (8 - LIMIT)) == sorted(chats)
    assert ([200] * LIMIT + [429] * (8 - LIMIT)) == sorted(votes)
