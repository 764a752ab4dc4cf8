"""Security: no server secret in anything the server serves; tokens forged from what the
page serves, expired, revoked or in the old format get 401 (against a real server); only
admins see the per-user table, training errors and users, through any route; moderation
(flag, unflag, revoke) from the command line, the admin API and the Dashboard; flagged
users' votes leave the leaderboard and canary judging; sign-in limits; key lengths."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from gradio_client import Client
from itsdangerous import URLSafeSerializer

from app.auth import Accounts, hash_password
from app.config import AuthConfig, ConfigError, load_config
from app.identity import TOKEN_SALT, Identity, InvalidToken
from tests.server_process import running_server

ADMIN = "an-admin-token-that-is-long-enough-0123456789"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}
HUB_NAME = "zelda-from-the-hub"  # a Hub user name only admins may see


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("security")
    (data / "session_secret").write_text("a key an earlier release served on the page")
    env = {"RLHF_CHAT_AUTH_ADMIN_TOKEN": ADMIN, "RLHF_CHAT_BACKUP_INTERVAL_MINUTES": "0"}
    with running_server(data, env=env) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def key(server) -> str:
    return (server.data_dir / "user_token_key").read_text().strip()


def new_user(http) -> SimpleNamespace:
    body = http.post("/api/session").json()
    return SimpleNamespace(id=body["user_id"], token=body["user_token"])


def hub_user_with_a_vote(data_dir: Path) -> int:
    """A Hugging Face user with a thumb, written straight into the server's database."""
    from storage import Store

    store = Store(data_dir / "chat.db")
    try:
        user = store.named_user("oauth", HUB_NAME)
        conversation = store.create_conversation(user.id)
        prompt = store.add_message(conversation.id, "user", "hi")
        answer = store.add_message(
            conversation.id, "assistant", "hello", parent_id=prompt.id, version="base"
        )
        store.set_thumb(answer.id, user.id, 1)
        return user.id
    finally:
        store.close()


def queue_call(http: httpx.Client, fn_index: int, data: list) -> dict:
    """Run one of the page's event handlers by number, as the page's own script does
    (private ones included), and return its output."""
    session = uuid.uuid4().hex[:10]
    joined = http.post(
        "/gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session, "trigger_id": None},
    )
    assert 200 == joined.status_code, joined.text
    with http.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message.get("output") or {}
    raise AssertionError(f"no answer from handler {fn_index}")


def refused(response: httpx.Response, status: int) -> str:
    assert status == response.status_code, response.text
    return response.json()["error"]


# -- nothing secret is served ----------------------------------------------------------------


def test_no_server_secret_in_the_page_config_api_info_html_or_any_json_response(server, http, key):
    assert not (server.data_dir / "session_secret").exists()  # the served key is retired
    me = new_user(http)
    answer = http.post("/api/chat", json=HELLO, headers=bearer(me.token)).json()
    battle = http.post("/api/battles", json=HELLO, headers=bearer(me.token)).json()
    responses = [
        http.get("/"),
        http.get("/config"),
        http.get("/gradio_api/info"),
        http.get("/healthz"),
        http.get("/api/version"),
        http.get("/api/leaderboard"),
        http.get("/api/openapi.json"),
        http.post("/api/session"),
        http.post("/api/chat", json=HELLO, headers=bearer(me.token)),
        http.post(
            "/api/feedback",
            json={"message_id": answer["message_id"], "kind": "flag"},
            headers=bearer(me.token),
        ),
        http.post(
            f"/api/battles/{battle['battle_id']}/vote",
            json={"outcome": "a"},
            headers=bearer(me.token),
        ),
        http.get("/api/admin/users", headers=bearer(ADMIN)),
        http.get("/api/admin/leaderboard", headers=bearer(ADMIN)),
        http.post("/api/admin/users/1/revoke", headers=bearer("wrong")),
        http.post("/api/login", json={"name": "x", "password": "y"}),
    ]
    client = Client(server.url, verbose=False)
    page_token = client.predict(None, api_name="/sign_in")
    served = [r.text for r in responses] + [
        str(page_token),
        str(client.predict(ADMIN, page_token, True, api_name="/dashboard")),
        str(client.predict("", page_token, False, api_name="/dashboard")),
    ]
    for secret in (key, ADMIN):
        for text in served:
            assert secret not in text
        assert secret not in server.log_path.read_text()
    # the page's local storage has a key of its own, not the one that signs tokens
    config = http.get("/config").json()
    browser_keys = [
        c["props"].get("secret") for c in config["components"] if "secret" in c["props"]
    ]
    assert browser_keys and key not in browser_keys


def strings_in(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(strings_in(k) | strings_in(v) for k, v in value.items()), set())
    if isinstance(value, list):
        return set().union(*(strings_in(v) for v in value), set())
    return set()


def test_tokens_forged_from_anything_the_page_serves_get_401(server, http, key):
    victim = new_user(http)
    html = http.get("/").text
    candidates = strings_in(http.get("/config").json()) | strings_in(
        http.get("/gradio_api/info").json()
    )
    candidates |= set(re.findall(r"[\w\-.~+/=]{16,}", html))
    candidates = {c for c in candidates if 8 <= len(c) <= 200 and not c.isspace()}
    browser_key = next(
        c["props"]["secret"]
        for c in http.get("/config").json()["components"]
        if "secret" in c["props"]
    )
    assert browser_key in candidates and key not in candidates
    now = int(time.time())
    for candidate in sorted(candidates):
        for token in (
            URLSafeSerializer(candidate, salt="rlhf-chat-user").dumps({"user_id": victim.id}),
            URLSafeSerializer(candidate, salt=TOKEN_SALT).dumps(
                {"user_id": victim.id, "version": 0, "issued_at": now}
            ),
        ):
            response = http.post("/api/feedback", json={"message_id": 1}, headers=bearer(token))
            assert 401 == response.status_code, (candidate, response.text)
    # the control: the victim's real token gets past the identity check
    assert (
        401
        != http.post(
            "/api/feedback", json={"message_id": 1}, headers=bearer(victim.token)
        ).status_code
    )


# -- expiry, revocation, the old format ------------------------------------------------------


def test_expired_revoked_and_old_format_tokens_get_401(server, http, key):
    me = new_user(http)
    assert 200 == http.post("/api/chat", json=HELLO, headers=bearer(me.token)).status_code
    month_ago = Identity(key, clock=lambda: time.time() - 31 * 86400).issue(me.id)
    assert "expired" in refused(http.post("/api/chat", json=HELLO, headers=bearer(month_ago)), 401)
    old = URLSafeSerializer(key, salt="rlhf-chat-user").dumps({"user_id": me.id})
    old_payload = URLSafeSerializer(key, salt=TOKEN_SALT).dumps({"user_id": me.id})
    for token in (old, old_payload):
        refused(http.post("/api/chat", json=HELLO, headers=bearer(token)), 401)

    # revoked from the command line while the server runs
    cli = subprocess.run(
        [sys.executable, "-m", "app", "users", "revoke", str(me.id)],
        env={"RLHF_CHAT_DATA": str(server.data_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == cli.returncode, cli.stderr
    assert "revoked" in refused(http.post("/api/chat", json=HELLO, headers=bearer(me.token)), 401)
    assert "revoked" in refused(
        http.post("/api/battles", json=HELLO, headers=bearer(me.token)), 401
    )

    # and through the admin API
    other = new_user(http)
    assert 200 == http.post("/api/chat", json=HELLO, headers=bearer(other.token)).status_code
    assert (
        403
        == http.post(f"/api/admin/users/{other.id}/revoke", headers=bearer(me.token)).status_code
    )
    done = http.post(f"/api/admin/users/{other.id}/revoke", headers=bearer(ADMIN))
    assert (200, other.id) == (done.status_code, done.json()["user_id"])
    refused(http.post("/api/chat", json=HELLO, headers=bearer(other.token)), 401)
    # the page's Gradio routes refuse it too
    client = Client(server.url, verbose=False)
    _, history, _ = client.predict("hi", [], other.token, 0.7, 8, api_name="/respond")
    assert [] == history


# -- who sees what -----------------------------------------------------------------------


def test_non_admins_cannot_read_the_per_user_table_through_any_route(server, http):
    hub_id = hub_user_with_a_vote(server.data_dir)
    anon = new_user(http)
    for path in ("/api/admin/users", "/api/admin/users?flagged=true", "/api/admin/leaderboard"):
        refused(http.get(path), 401)
        refused(http.get(path, headers=bearer(anon.token)), 403)
    for action in ("flag", "unflag", "revoke"):
        refused(http.post(f"/api/admin/users/{anon.id}/{action}", headers=bearer(anon.token)), 403)
    for text in (http.get("/").text, http.get("/config").text, http.get("/gradio_api/info").text):
        assert HUB_NAME not in text

    client = Client(server.url, verbose=False)
    routes = [
        name
        for name, endpoint in http.get("/gradio_api/info").json()["named_endpoints"].items()
        if endpoint["returns"]
    ]
    assert "/dashboard" in routes
    assert not [r for r in routes if r.startswith("/refresh")]  # the other refreshes are private
    attempts = [(None, None), ("", anon.token), ("wrong", anon.token), (ADMIN[:-1], None)]
    for typed, session in attempts:
        out = client.predict(typed, session, True, api_name="/dashboard")
        assert HUB_NAME not in json.dumps(out, default=str)
        assert [] == out[9]["data"]  # judgments per user
        assert "" == out[8]  # training errors
        assert [] == out[10]["data"]  # users (the admin area's column is not an output here)
        assert out[11]["visible"] is False  # the leaderboard with flagged users' votes
    # the private refreshes (after sign-in, after each admin button) are no API routes, but
    # the queue still runs them by number: each checks the credential as well
    config = http.get("/config").json()
    shares = next(
        c["id"] for c in config["components"] if c["props"].get("elem_id") == "user-shares"
    )
    dependencies = [d for d in config["dependencies"] if shares in d["outputs"]]
    assert len(dependencies) > 1
    for dependency in dependencies:
        for typed, session in attempts:
            out = queue_call(http, dependency["id"], [typed, session, True])
            assert HUB_NAME not in json.dumps(out)
    assert HUB_NAME in json.dumps(queue_call(http, dependencies[-1]["id"], [ADMIN, None, True]))
    # every other route with an answer either needs nothing of this or shows no user names
    page_token = client.predict(None, api_name="/sign_in")
    assert HUB_NAME not in json.dumps(client.predict(api_name="/leaderboard"), default=str)
    assert HUB_NAME not in str(page_token)
    # nor use the moderation buttons' routes
    for typed, session in attempts:
        for action in ("/admin_flag", "/admin_revoke"):
            client.predict(typed, session, str(hub_id), api_name=action)
    users = http.get("/api/admin/users", headers=bearer(ADMIN)).json()["users"]
    hub = next(u for u in users if u["id"] == hub_id)
    assert (False, 0) == (hub["flagged"], hub["token version"])
    # the control: the admin token shows them
    out = client.predict(ADMIN, None, True, api_name="/dashboard")
    assert HUB_NAME in json.dumps(out, default=str)
    users = http.get("/api/admin/users", headers=bearer(ADMIN)).json()["users"]
    assert HUB_NAME in {u["name"] for u in users}


# -- in process: flagged users, moderation, limits, keys -----------------------------------


def _voted_battle(store, user_id: int, outcome: str, version_a="v1", version_b="base"):
    conversation = store.create_conversation(user_id)
    prompt = store.add_message(conversation.id, "user", "q")
    a = store.add_message(conversation.id, "assistant", "a", parent_id=prompt.id, version=version_a)
    b = store.add_message(conversation.id, "assistant", "b", parent_id=prompt.id, version=version_b)
    battle = store.create_battle(user_id, prompt.id, a.id, b.id, pairing="test")
    store.vote_battle(battle.id, user_id, outcome)


def test_flagged_users_votes_leave_the_leaderboard_and_canary_judging(store):
    from app.leaderboard import store_leaderboard
    from trainer.cycle import head_to_head

    store.add_version("policy", "v1", status="candidate")
    honest, spammer = store.create_user("anon"), store.create_user("anon")
    _voted_battle(store, honest.id, "b")
    for _ in range(5):
        _voted_battle(store, spammer.id, "a")
    assert 6 == head_to_head(store, "v1", "base")[1]
    store.set_user_flagged(spammer.id, True)
    assert (0.0, 1) == head_to_head(store, "v1", "base")
    assert {"base": 1, "v1": 1} == {r.version: r.battles for r in store_leaderboard(store).ratings}
    with_flagged = store_leaderboard(store, include_flagged=True)
    assert {"base": 6, "v1": 6} == {r.version: r.battles for r in with_flagged.ratings}


def test_users_command_lists_flags_unflags_and_revokes(tmp_path, capsys):
    from app.cli import main
    from storage import Store

    store = Store(tmp_path / "chat.db")
    user = store.named_user("oauth", "carol")
    store.close()
    data = ["--data-dir", str(tmp_path)]
    assert 0 == main(["users", "flag", str(user.id), *data])
    assert 0 == main(["users", "list", "--flagged", *data])
    listing = capsys.readouterr().out
    assert "carol" in listing and "True" in listing
    assert 0 == main(["users", "unflag", str(user.id), *data])
    assert 0 == main(["users", "revoke", str(user.id), *data])
    assert 1 == main(["users", "flag", "999", *data])
    assert "no user 999" in capsys.readouterr().err
    store = Store(tmp_path / "chat.db")
    assert (0, 1) == (store.get_user(user.id).is_flagged, store.get_user(user.id).token_version)
    store.close()


def test_dashboard_moderation_buttons_need_an_admin(store, monkeypatch):
    import gradio as gr

    from app.admin import set_flagged
    from app.page import dashboard

    warnings, infos = [], []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    monkeypatch.setattr(gr, "Info", infos.append)
    target = store.create_user("anon")
    flag = dashboard._admin(lambda uid: str(set_flagged(store, uid, True)), ADMIN)
    flag("", None, str(target.id))
    flag("wrong", None, str(target.id))
    assert 0 == store.get_user(target.id).is_flagged and 2 == len(warnings)
    flag(ADMIN, None, f"#{target.id}")
    flag(ADMIN, None, "not a number")
    assert 1 == store.get_user(target.id).is_flagged
    assert 1 == len(infos) and "user id must be an integer" in warnings[-1]


def test_report_on_an_answer_is_stored_as_a_flag(store, monkeypatch):
    import gradio as gr

    from app.chat import ChatService
    from app.config import ServingConfig
    from app.page import chat as ui
    from app.serving.scripted import ScriptedBackend

    monkeypatch.setattr(gr, "Info", lambda message: None)
    identity = Identity("k" * 32, store=store)
    service = ChatService(store, ScriptedBackend(), ServingConfig())
    me = store.create_user("anon")
    _, answer = service.answer(me.id, HELLO["messages"])
    thumb = ui.thumb(service, identity)
    thumb(
        [answer.id - 1, answer.id],
        identity.issue(me.id),
        gr.LikeData(None, {"index": 1, "value": "", "liked": True}),
    )
    for _ in range(2):  # the page sends a report event twice: it counts once
        thumb(
            [answer.id - 1, answer.id],
            identity.issue(me.id),
            gr.LikeData(None, {"index": 1, "value": "", "liked": ui.REPORT}),
        )
    kinds = sorted((f.kind, f.value) for f in store.message_feedback(answer.id))
    assert [("flag", None), ("thumb", 1)] == kinds  # the report leaves the thumb alone


def test_tokens_expire_sooner_for_admins_and_a_changed_or_removed_password_revokes(store):
    now = [1_000_000.0]
    config = AuthConfig(password_users=["alice:wonderland", "bob:builder"], admin_users=["alice"])
    accounts = Accounts(config, store, fingerprint_key="f" * 32)
    identity = Identity(
        "k" * 32, store=store, max_age_s=accounts.token_max_age_s, clock=lambda: now[0]
    )
    alice, bob = (accounts.login(n, p) for n, p in (("alice", "wonderland"), ("bob", "builder")))
    tokens = {"alice": identity.issue(alice.id), "bob": identity.issue(bob.id)}
    now[0] += 2 * 86400  # past an admin's day, within anyone's 30 days
    with pytest.raises(InvalidToken, match="expired"):
        identity.verify(tokens["alice"])
    assert bob.id == identity.verify(tokens["bob"])
    tokens["alice"] = identity.issue(alice.id)
    assert [] == Accounts(config, store, fingerprint_key="f" * 32).sync_password_users()
    assert alice.id == identity.verify(tokens["alice"])  # an unchanged config revokes nothing
    changed = AuthConfig(password_users=["alice:looking-glass"], admin_users=["alice"])
    assert {alice.id, bob.id} == set(
        Accounts(changed, store, fingerprint_key="f" * 32).sync_password_users()
    )
    for token in tokens.values():
        with pytest.raises(InvalidToken, match="revoked"):
            identity.verify(token)


def test_every_password_check_costs_one_scrypt_and_sign_in_is_limited(tmp_path, monkeypatch):
    from app.server import create_app

    config = load_config(
        env={
            "RLHF_CHAT_DATA": str(tmp_path),
            "RLHF_CHAT_SERVING_BACKEND": "scripted",
            "RLHF_CHAT_SCHEDULE_ENABLED": "false",
            "RLHF_CHAT_BACKUP_INTERVAL_MINUTES": "0",
            "RLHF_CHAT_AUTH_PASSWORD_USERS": f"alice:{hash_password('wonderland')},bob:builder",
            "RLHF_CHAT_AUTH_LOGIN_ATTEMPTS_PER_WINDOW": "6",
            "RLHF_CHAT_AUTH_LOGIN_FAILURES_PER_NAME": "2",
        }
    )
    application = create_app(config)
    try:
        client = TestClient(application.fastapi)
        calls = []
        real = hashlib.scrypt
        monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
        for name in ("alice", "bob", "nobody"):  # hashed, plain and unknown: one scrypt each
            calls.clear()
            assert (
                401 == client.post("/api/login", json={"name": name, "password": "x"}).status_code
            )
            assert 1 == len(calls), name
        # alice and bob have one failure each; a second and then the limit
        assert 401 == client.post("/api/login", json={"name": "bob", "password": "y"}).status_code
        calls.clear()
        limited = client.post("/api/login", json={"name": "bob", "password": "builder"})
        assert 429 == limited.status_code and "this name" in limited.json()["error"]
        assert [] == calls  # refused before any scrypt
        assert (
            200
            == client.post(
                "/api/login", json={"name": "alice", "password": "wonderland"}
            ).status_code
        )
        # six attempts from this address so far: the page's form is refused too
        form = client.post("/login", data={"username": "alice", "password": "wonderland"})
        assert 429 == form.status_code
        api = client.post("/api/login", json={"name": "alice", "password": "wonderland"})
        assert 429 == api.status_code and "address" in api.json()["error"]
    finally:
        application.close()


def test_configured_secrets_must_be_32_characters():
    for name in ("SESSION_SECRET", "ADMIN_TOKEN"):
        with pytest.raises(ConfigError, match=r"at least 32"):
            load_config(env={f"RLHF_CHAT_AUTH_{name}": "short-secret"})
        assert load_config(env={f"RLHF_CHAT_AUTH_{name}": "s" * 32})


def test_the_dashboard_shows_admin_parts_to_an_admin_users_session_only(tmp_path):
    from app.server import create_app

    config = load_config(
        env={
            "RLHF_CHAT_DATA": str(tmp_path),
            "RLHF_CHAT_SERVING_BACKEND": "scripted",
            "RLHF_CHAT_SCHEDULE_ENABLED": "false",
            "RLHF_CHAT_BACKUP_INTERVAL_MINUTES": "0",
            "RLHF_CHAT_AUTH_PASSWORD_USERS": "alice:wonderland,bob:builder",
            "RLHF_CHAT_AUTH_ADMIN_USERS": "alice",
        }
    )
    application = create_app(config)
    try:
        hub_user_with_a_vote(tmp_path)
        client = TestClient(application.fastapi)
        alice, bob = (
            client.post("/api/login", json={"name": n, "password": p}).json()["user_token"]
            for n, p in (("alice", "wonderland"), ("bob", "builder"))
        )
        refresh = next(f.fn for f in application.demo.fns.values() if f.fn.__name__ == "refresh")
        for typed, session in (("", bob), ("", None), ("wrong", alice), (bob, None)):
            out = refresh(typed, session, True)
            assert out[9].empty and out[11].empty and out[10]["visible"] is False
        out = refresh("", alice, True)
        assert HUB_NAME in out[11]["name"].tolist() and out[10]["visible"] is True
        assert out[12]["visible"] is True  # the leaderboard with flagged users' votes
    finally:
        application.close()


def test_the_sign_in_window_slides_and_forgets_stale_keys():
    from app.limits import SlidingWindow

    now = [0.0]
    window = SlidingWindow(2, 10.0, clock=lambda: now[0])
    assert window.hit("a") and window.hit("a") and not window.hit("a") and window.full("a")
    assert not window.full("b") and window.hit("b")  # per key
    now[0] = 10.5
    assert not window.full("a") and window.hit("a")
    window.SWEEP_AT = 2
    now[0] = 30.0
    window.hit("c")
    assert {"c"} == set(window._times)  # a and b had nothing left in the window
