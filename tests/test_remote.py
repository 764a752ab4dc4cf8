"""RemoteBackend against a fake TGI / vLLM server speaking their wire format."""

import pytest
from fastapi.testclient import TestClient
from huggingface_hub import constants as hub_constants

from app.config import ConfigError, load_config
from app.serving.backend import BackendError, SamplingParams, UnknownVersion
from app.serving.remote import RemoteBackend, adapter_names, path_mapper
from app.serving.swap import VersionSync
from tests.fake_model_server import fake_model_server
from tests.server_process import free_port

HI = [{"role": "user", "content": "hi there"}]
PARAMS = SamplingParams(temperature=0.5, max_new_tokens=32)
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def hub_online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1, which blocks InferenceClient from any URL."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def tgi():
    with fake_model_server("tgi") as server:
        yield server


@pytest.fixture
def vllm():
    with fake_model_server("vllm") as server:
        yield server


def adapter_dir(tmp_path, name):
    path = tmp_path / "adapters" / name
    path.mkdir(parents=True)
    return str(path)


def deltas(reply):
    return list(reply)


def test_tgi_streams_deltas_and_asks_for_the_adapter_by_version_name(tgi, tmp_path):
    v1 = adapter_dir(tmp_path, "v1")
    tgi.adapters["v1"] = v1  # started with LORA_ADAPTERS=v1=...
    backend = RemoteBackend(tgi.url, "tgi", adapters=[f"v1={v1}"])
    backend.load("v1", v1)
    reply = backend.stream(HI, version="v1", params=PARAMS)
    chunks = deltas(reply)
    assert len(chunks) > 1
    assert "[v1] You said: hi there" == "".join(chunks)
    assert ("v1", "stop", len(chunks)) == (reply.version, reply.finish_reason, reply.n_tokens)
    request = tgi.chats()[-1]
    assert {"model": "v1", "stream": True, "max_tokens": 32, "temperature": 0.5} == {
        k: request[k] for k in ("model", "stream", "max_tokens", "temperature")
    }
    assert "top_p" not in request  # TGI refuses top_p = 1.0
    assert HI == request["messages"]
    backend.close()


def test_tgi_base_is_asked_for_as_tgi(tgi):
    backend = RemoteBackend(tgi.url, "tgi")
    assert f"[{BASE}] You said: hi there" == backend.stream(HI, params=PARAMS).text()
    assert "tgi" == tgi.chats()[-1]["model"]


def test_length_limit_is_reported(tgi):
    reply = RemoteBackend(tgi.url, "tgi").stream(HI, params=SamplingParams(max_new_tokens=2))
    assert 2 == len(deltas(reply))
    assert "length" == reply.finish_reason


def test_tgi_refuses_a_version_it_was_not_started_with(tgi, tmp_path):
    """TGI would silently answer with the base model: refuse instead, saying how to restart."""
    v2 = adapter_dir(tmp_path, "v2")
    backend = RemoteBackend(tgi.url, "tgi", adapters=["v1=/elsewhere/v1"])
    with pytest.raises(BackendError, match=f"restart it with LORA_ADAPTERS=v2={v2}"):
        backend.load("v2", v2)
    assert ["base"] == backend.versions()
    with pytest.raises(UnknownVersion):
        backend.stream(HI, version="v2")
    assert [] == tgi.chats()


def test_tgi_promotion_waits_for_a_restart_with_the_adapter(tgi, store, tmp_path):
    v1 = adapter_dir(tmp_path, "v1")
    store.add_version("policy", "v1", path=v1)
    store.promote("v1")
    sync = VersionSync(store, RemoteBackend(tgi.url, "tgi"))
    assert sync.sync() is False
    assert "base" == sync.backend.live_version  # the old version keeps serving
    assert f"LORA_ADAPTERS=v1={v1}" in sync.last_error
    sync.backend.stream(HI).text()
    assert "tgi" == tgi.chats()[-1]["model"]
    # the server restarted with LORA_ADAPTERS=v1=..., and so was this process
    tgi.adapters["v1"] = v1
    restarted = VersionSync(store, RemoteBackend(tgi.url, "tgi", adapters=[f"v1={v1}"]))
    assert restarted.sync() is True
    assert "[v1] You said: hi there" == restarted.backend.stream(HI).text()


def test_vllm_promotion_loads_the_new_adapter_and_unloads_the_unwanted(vllm, store, tmp_path):
    backend = RemoteBackend(vllm.url, "vllm")
    sync = VersionSync(store, backend)
    paths = {}
    for name in ("v1", "v2", "v3"):
        paths[name] = adapter_dir(tmp_path, name)
        store.add_version("policy", name, path=paths[name])
        store.promote(name)
        assert sync.sync() is True
        assert name == backend.live_version
    loads = vllm.posts("/v1/load_lora_adapter")
    assert [{"lora_name": n, "lora_path": paths[n]} for n in ("v1", "v2", "v3")] == loads
    # v2 stays loaded as the previous live version (rollback, battles); v1 goes
    assert [{"lora_name": "v1"}] == vllm.posts("/v1/unload_lora_adapter")
    assert {"v2", "v3"} == set(vllm.adapters)
    assert ["base", "v2", "v3"] == sorted(backend.versions())
    assert "[v3] You said: hi there" == backend.stream(HI).text()
    assert "v3" == vllm.chats()[-1]["model"]


def test_vllm_base_requests_name_the_served_model(vllm):
    backend = RemoteBackend(vllm.url, "vllm")
    assert f"[{BASE}] You said: hi there" == backend.stream(HI).text()
    assert BASE == vllm.chats()[-1]["model"]


def test_vllm_adapter_still_loaded_from_before_is_not_loaded_twice(vllm, tmp_path):
    v1 = adapter_dir(tmp_path, "v1")
    vllm.adapters["v1"] = v1
    backend = RemoteBackend(vllm.url, "vllm")
    backend.load("v1", v1)
    assert [] == vllm.posts("/v1/load_lora_adapter")
    assert "v1" in backend.versions()


def test_vllm_refusals_carry_the_servers_message(vllm, tmp_path):
    backend = RemoteBackend(vllm.url, "vllm")
    with pytest.raises(BackendError, match="refused to load v9 .*No adapter found"):
        backend.load("v9", str(tmp_path / "missing"))
    # a version this process loaded but the server lost (it restarted): a clear refusal
    v1 = adapter_dir(tmp_path, "v1")
    backend.load("v1", v1)
    vllm.adapters.clear()
    with pytest.raises(BackendError, match="refused the request: 404 The model `v1` does not"):
        backend.stream(HI, version="v1").text()


def test_server_down_is_a_clear_message_and_stream_still_returns_at_once():
    url = f"http://127.0.0.1:{free_port()}"
    backend = RemoteBackend(url, "vllm", base_model="m", timeout_s=5)
    reply = backend.stream(HI)  # returns before anything is sent
    with pytest.raises(BackendError, match=f"the model server at {url} is not answering"):
        reply.text()
    assert "error" == reply.finish_reason
    assert f"the model server at {url} is not answering" in backend.health()
    with pytest.raises(BackendError, match="not answering"):
        backend.load("v1", "/somewhere")


def test_healthz_is_degraded_and_chat_says_why_when_the_server_is_down(tmp_path):
    from app.server import create_app

    url = f"http://127.0.0.1:{free_port()}"
    config = load_config(env={"RLHF_CHAT_DATA": str(tmp_path)})
    app = create_app(config, backend=RemoteBackend(url, "tgi", timeout_s=5))
    try:
        client = TestClient(app.fastapi)
        health = client.get("/healthz")
        assert 200 == health.status_code
        body = health.json()
        assert ("degraded", "base") == (body["status"], body["live_version"])
        assert url in body["problem"]
        token = client.post("/api/session").json()["user_token"]
        chat = client.post(
            "/api/chat", json={"messages": HI}, headers={"Authorization": f"Bearer {token}"}
        )
        assert 503 == chat.status_code
        assert f"the model server at {url} is not answering" in chat.json()["error"]
    finally:
        app.close()


def test_healthz_is_ok_when_the_server_answers(tgi, tmp_path):
    from app.server import create_app

    config = load_config(env={"RLHF_CHAT_DATA": str(tmp_path)})
    app = create_app(config, backend=RemoteBackend(tgi.url, "tgi"))
    try:
        assert {"status": "ok", "live_version": "base"} == TestClient(app.fastapi).get(
            "/healthz"
        ).json()
    finally:
        app.close()


def test_offline_mode_is_named_instead_of_a_confusing_failure(tgi, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    backend = RemoteBackend(tgi.url, "tgi")
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE is set"):
        backend.stream(HI).text()
    assert "HF_HUB_OFFLINE" in backend.health()


def test_the_ambient_hub_token_never_reaches_the_model_server(tgi, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_you")
    RemoteBackend(tgi.url, "tgi").stream(HI).text()
    RemoteBackend(tgi.url, "tgi", token="server-key").stream(HI).text()
    assert ["", "Bearer server-key"] == tgi.authorizations


def test_adapter_names_and_paths():
    assert {"v1", "v2", "org/a"} == adapter_names(["v1=/a/v1", " v2 ", "org/a@rev", ""])
    to_server = path_mapper(tmp := __import__("pathlib").Path("/srv/data"), "/data")
    assert "/data/adapters/v1" == to_server(str(tmp / "adapters" / "v1"))
    assert "/other/v1" == to_server("/other/v1")


def test_config_and_flags_for_the_remote_backend(tmp_path):
    from app.cli import build_parser

    with pytest.raises(ConfigError, match="needs serving.remote_url"):
        load_config(env={"RLHF_CHAT_SERVING_BACKEND": "remote"})
    with pytest.raises(ConfigError, match="serving.remote_kind"):
        load_config(env={"RLHF_CHAT_SERVING_REMOTE_KIND": "ollama"})
    args = build_parser().parse_args(
        ["serve", "--backend", "remote", "--remote-url", "http://h:8000", "--remote-kind", "vllm"]
    )
    config = load_config(
        env={"RLHF_CHAT_SERVING_REMOTE_ADAPTERS": "v1=/data/adapters/v1,v2=/data/adapters/v2"},
        overrides=args.overrides(args),
    )
    serving = config.serving
    assert ("remote", "http://h:8000", "vllm") == (
        serving.backend,
        serving.remote_url,
        serving.remote_kind,
    )
    assert ["v1=/data/adapters/v1", "v2=/data/adapters/v2"] == serving.remote_adapters
