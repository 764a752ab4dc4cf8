"""Sign-in: password users, Hugging Face on a Space, the admin role, the chat rate limit."""

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from app.auth import Accounts, hash_password, password_matches
from app.config import AuthConfig, ConfigError, load_config
from app.errors import InputError
from app.identity import Identity
from app.page import build, session
from app.serving.scripted import ScriptedBackend

HELLO = {"messages": [{"role": "user", "content": "hello"}]}
ADMIN = "the-admin-token-of-at-least-32-characters"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from app.server import create_app

    data = tmp_path_factory.mktemp("auth")
    config = load_config(
        env={
            "RLHF_CHAT_DATA": str(data),
            "RLHF_CHAT_SERVING_BACKEND": "scripted",
            "RLHF_CHAT_SERVING_CHATS_PER_WINDOW": "2",
            "RLHF_CHAT_AUTH_ADMIN_TOKEN": ADMIN,
            "RLHF_CHAT_AUTH_PASSWORD_USERS": f"alice:{hash_password('wonderland')},bob:builder",
            "RLHF_CHAT_AUTH_ADMIN_USERS": "alice",
        }
    )
    application = create_app(config)
    yield application
    application.close()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app.fastapi)


def login(client, name, password):
    return client.post("/api/login", json={"name": name, "password": password})


def test_password_login_gives_the_same_named_user_each_time(client, app):
    first = login(client, "alice", "wonderland").json()
    again = login(client, "alice", "wonderland").json()
    assert first["user_id"] == again["user_id"]
    user = app.store.get_user(first["user_id"])
    assert ("password", "alice") == (user.kind, user.name)
    assert 200 == login(client, "bob", "builder").status_code  # a plain configured secret


@pytest.mark.parametrize(("name", "password"), [("alice", "wrong"), ("mallory", "x")])
def test_wrong_or_unknown_credentials_are_refused(client, name, password):
    response = login(client, name, password)
    assert (401, {"error": "wrong name or password"}) == (response.status_code, response.json())


def test_no_anonymous_sessions_once_passwords_are_configured(client):
    response = client.post("/api/session")
    assert 403 == response.status_code
    assert "POST /api/login" in response.json()["error"]


@pytest.mark.parametrize("who", ["anonymous", "bob", "nobody"])
def test_admin_endpoints_refuse_normal_and_anonymous_users(client, app, who):
    identity = Identity(app.store.path.parent.joinpath("user_token_key").read_text().strip())
    token = {
        "anonymous": identity.issue(app.store.create_user("anon").id),
        "bob": login(client, "bob", "builder").json()["user_token"],
        "nobody": None,
    }[who]
    headers = bearer(token) if token else {}
    for path, body in [
        ("/api/admin/promote", {"version": "base"}),
        ("/api/admin/rollback", None),
        ("/api/admin/train", {}),
    ]:
        response = client.post(path, json=body, headers=headers)
        assert (401 if token is None else 403) == response.status_code, path


def test_admin_users_and_the_admin_token_may_act(client):
    alice = login(client, "alice", "wonderland").json()["user_token"]
    for token in (alice, ADMIN):
        response = client.post(
            "/api/admin/promote", json={"version": "base"}, headers=bearer(token)
        )
        assert (200, {"live": "base"}) == (response.status_code, response.json())


def test_chat_rate_limit_gives_429_per_user(client):
    bob = bearer(login(client, "bob", "builder").json()["user_token"])
    alice = bearer(login(client, "alice", "wonderland").json()["user_token"])
    assert [200, 200] == [
        client.post("/api/chat", json=HELLO, headers=bob).status_code for _ in "ab"
    ]
    refused = client.post("/api/chat", json=HELLO, headers=bob)
    assert 429 == refused.status_code
    assert "too many messages: at most 2 every 60 seconds" in refused.json()["error"]
    assert 200 == client.post("/api/chat", json=HELLO, headers=alice).status_code  # her own quota


def test_password_hashes():
    stored = hash_password("pw", salt=b"0" * 16)
    assert stored.startswith("scrypt$")
    assert password_matches("pw", stored) and not password_matches("pW", stored)
    assert not password_matches("pw", "scrypt$not-hex$zz")
    with pytest.raises(ConfigError, match="auth.password_users"):
        load_config(env={"RLHF_CHAT_AUTH_PASSWORD_USERS": "no-secret"})


def test_admin_role_is_for_signed_in_users_only(store):
    accounts = Accounts(AuthConfig(admin_users=["alice"]), store)
    assert accounts.is_admin(store.named_user("oauth", "alice"))
    assert accounts.is_admin(store.named_user("password", "alice"))
    assert not accounts.is_admin(store.named_user("oauth", "bob"))
    assert not accounts.is_admin(store.create_user("anon", name="alice"))
    assert Accounts(AuthConfig(), store).admin_check(Identity("s")) is None


def test_page_identity_follows_sign_in_and_sign_out(store):
    identity = Identity("secret")
    accounts = Accounts(AuthConfig(space_id="me/space"), store)
    sign_in = session.sign_in(identity, store, accounts)
    anon = sign_in(None)
    assert "anon" == store.get_user(identity.verify(anon)).kind
    renewed = sign_in(anon, SimpleNamespace(username=None), None)
    assert identity.verify(anon) == identity.verify(renewed)  # the same user, renewed
    hub = sign_in(anon, SimpleNamespace(username=None), SimpleNamespace(username="carol"))
    carol = store.get_user(identity.verify(hub))
    assert ("oauth", "carol") == (carol.kind, carol.name)
    assert carol.id == identity.verify(sign_in(hub, None, SimpleNamespace(username="carol")))
    signed_out = sign_in(hub, SimpleNamespace(username=None), None)
    assert "anon" == store.get_user(identity.verify(signed_out)).kind
    password = sign_in(None, SimpleNamespace(username="alice"), None)
    assert ("password", "alice") == (
        store.get_user(identity.verify(password)).kind,
        store.get_user(identity.verify(password)).name,
    )


def test_sign_in_with_hugging_face_only_on_a_space(store, tmp_path, monkeypatch):
    import gradio as gr

    monkeypatch.setattr(build, "_oauth_installed", lambda: True)
    # outside a real Space Gradio mocks the sign-in with the local Hub login: not here
    monkeypatch.setattr("gradio.routes.attach_oauth", lambda app: None)

    def has_login_button(env):
        config = load_config(env={"RLHF_CHAT_DATA": str(tmp_path), **env})
        demo = build.build_demo(ScriptedBackend(), store, config)
        return any(isinstance(b, gr.LoginButton) for b in demo.blocks.values())

    assert not has_login_button({})
    space = {"SPACE_ID": "me/space", "OAUTH_CLIENT_ID": "x"}
    assert "me/space" == load_config(env=space).auth.space_id
    assert "" == load_config(env={"SPACE_ID": "me/space"}).auth.space_id  # no hf_oauth
    assert has_login_button(space)


def test_the_page_asks_for_a_password_and_healthz_does_not(client):
    page = TestClient(client.app)  # its own cookies
    assert 401 == page.get("/config").status_code
    assert 200 == page.get("/healthz").status_code
    assert 200 == page.post("/login", data={"username": "bob", "password": "builder"}).status_code
    assert 200 == page.get("/config").status_code


def test_requiring_sign_in_needs_a_way_to_sign_in():
    with pytest.raises(ConfigError, match="auth.require_sign_in needs a way to sign in"):
        load_config(env={"RLHF_CHAT_AUTH_REQUIRE_SIGN_IN": "true"})
    space = {"SPACE_ID": "me/space", "OAUTH_CLIENT_ID": "x", "RLHF_CHAT_AUTH_REQUIRE_SIGN_IN": "1"}
    assert load_config(env=space).auth.require_sign_in


def test_a_space_that_requires_sign_in_refuses_anonymous_users(tmp_path, store):
    from app.server import create_app

    config = load_config(
        env={
            "RLHF_CHAT_DATA": str(tmp_path),
            "RLHF_CHAT_SERVING_BACKEND": "scripted",
            "SPACE_ID": "me/space",
            "OAUTH_CLIENT_ID": "x",
            "RLHF_CHAT_AUTH_REQUIRE_SIGN_IN": "true",
        }
    )
    application = create_app(config)
    try:
        client = TestClient(application.fastapi)
        assert 403 == client.post("/api/session").status_code
        identity = Identity(tmp_path.joinpath("user_token_key").read_text().strip())
        old_anon = bearer(identity.issue(application.store.create_user("anon").id))
        carol = bearer(identity.issue(application.store.named_user("oauth", "carol").id))
        for path in ("/api/chat", "/api/battles"):
            refused = client.post(path, json=HELLO, headers=old_anon)
            assert 403 == refused.status_code, path
            assert "needs a sign-in" in refused.json()["error"]
            assert 200 == client.post(path, json=HELLO, headers=carol).status_code, path
        assert 0 == application.store.db["messages"].count_where(
            "conversation_id IN (SELECT id FROM conversations WHERE user_id = ?)",
            [identity.verify(old_anon["Authorization"][7:])],
        )
    finally:
        application.close()


def test_the_page_gives_no_anonymous_identity_where_sign_in_is_required(store):
    identity = Identity("secret")
    accounts = Accounts(AuthConfig(space_id="me/space", require_sign_in=True), store)
    sign_in = session.sign_in(identity, store, accounts)
    assert sign_in(None, SimpleNamespace(username=None), None) is None
    stale = identity.issue(store.create_user("anon").id)
    assert sign_in(stale, SimpleNamespace(username=None), None) is None
    hub = sign_in(None, SimpleNamespace(username=None), SimpleNamespace(username="carol"))
    assert "oauth" == store.get_user(identity.verify(hub)).kind
    with pytest.raises(InputError, match="not signed in"):
        session.current_user(identity, None)


def test_dashboard_admin_buttons_accept_an_admin_users_session(store, monkeypatch):
    import gradio as gr

    from app.page import dashboard

    warnings, infos = [], []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    monkeypatch.setattr(gr, "Info", infos.append)
    identity = Identity("secret")
    accounts = Accounts(AuthConfig(admin_users=["alice"]), store)
    alice = identity.issue(store.named_user("password", "alice").id)
    bob = identity.issue(store.named_user("password", "bob").id)
    done = []
    handler = dashboard._admin(
        lambda: done.append(1) or "done", ADMIN, accounts.admin_check(identity)
    )
    handler("", alice)  # empty box: alice's session is an admin's
    handler(ADMIN, None)
    handler("", bob)
    handler("", None)
    handler("wrong", alice)  # a typed token is checked as typed, not topped up by the session
    assert [1, 1] == done
    assert ["done", "done"] == infos
    assert 3 == len(warnings)
    assert "neither the admin token nor the token of an admin user" in warnings[0]
    assert "Authorization" in warnings[1]  # nothing to check at all


def test_services_refuse_anonymous_users_where_sign_in_is_required(store):
    """The page's handlers and the API both go through these services: an anonymous
    token sent to Gradio's own routes is refused as well."""
    from app.arena import ArenaService
    from app.chat import ChatService
    from app.config import ArenaConfig, ServingConfig

    chat = ChatService(store, ScriptedBackend(), ServingConfig(), anonymous_allowed=False)
    arena = ArenaService(chat, ArenaConfig())
    carol = store.named_user("oauth", "carol").id
    anon = store.create_user("anon").id
    ask = HELLO["messages"]
    _, answer = chat.answer(carol, ask)
    _, battle = arena.battle(carol, ask)
    for attempt in (
        lambda: chat.start(anon, ask),
        lambda: chat.retry(anon, answer.id),
        lambda: chat.feedback(anon, answer.id, "thumb", 1),
        lambda: arena.start(anon, ask),
        lambda: arena.vote(anon, battle.id, "a"),
    ):
        with pytest.raises(InputError, match="needs a sign-in") as refused:
            attempt()
        assert 403 == refused.value.status
    assert "a" == arena.vote(carol, battle.id, "a").outcome
