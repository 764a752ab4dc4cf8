"""Hot swap: the backend follows the store's live version without dropping a request."""

import threading

import pytest

from app.serving.backend import SamplingParams
from app.serving.local import LocalBackend
from app.serving.swap import VersionSync
from tests.adapters import random_adapter

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)
PROMPT = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture
def setup(store, tiny_model, tokenizer, tiny_model_dir, tmp_path):
    backend = LocalBackend(tiny_model, tokenizer, max_batch_size=4, batch_window_s=0.005)
    store.add_version("policy", "v1", path=random_adapter(tiny_model_dir, tmp_path / "v1", 1))
    store.add_version("policy", "v2", path=random_adapter(tiny_model_dir, tmp_path / "v2", 2))
    sync = VersionSync(store, backend)
    yield store, backend, sync
    backend.close()


def test_candidates_load_beside_live_and_promotion_switches(setup):
    store, backend, sync = setup
    assert sync.sync() is False
    assert ("base", ["base", "v1", "v2"]) == (backend.live_version, sorted(backend.versions()))
    store.set_version_status("v2", "rejected")
    store.promote("v1")
    assert sync.sync() is True
    assert "v1" == backend.live_version
    assert "v1" == backend.stream(PROMPT, params=GREEDY).version
    # base stays (previous live, for rollback and battles); the rejected one is unloaded
    assert ["base", "v1"] == sorted(backend.versions())


def test_rollback_restores_the_previous_version(setup):
    store, backend, sync = setup
    store.promote("v1")
    sync.sync()
    store.rollback()
    sync.sync()
    assert ("base", "rolled_back") == (backend.live_version, store.get_version("v1").status)
    assert "base" == backend.stream(PROMPT, params=GREEDY).version


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(setup, tmp_path):
    store, backend, sync = setup
    store.add_version("policy", "broken", path=str(tmp_path / "missing"))
    store.promote("broken")
    assert sync.sync() is False
    assert "base" == backend.live_version
    assert "broken" in sync.last_error
    assert "base" == backend.stream(PROMPT, params=GREEDY).version


def test_swap_under_load_drops_nothing_and_mixes_nothing(setup):
    store, backend, sync = setup
    sync.sync()
    expected = {v: backend.stream(PROMPT, version=v, params=GREEDY).text() for v in ("base", "v1")}
    assert expected["base"] != expected["v1"]
    answers, errors, stop = [], [], threading.Event()
    some_answers = threading.Semaphore(0)

    def chat():
        while not stop.is_set():
            try:
                reply = backend.stream(PROMPT, params=GREEDY)
                answers.append((reply.version, reply.text()))
                some_answers.release()
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=chat) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(8):  # traffic is flowing on base
        assert some_answers.acquire(timeout=60)
    store.promote("v1")
    sync.sync()
    before = len(answers)
    while len(answers) < before + 8:  # and keeps flowing on v1
        assert some_answers.acquire(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert [] == errors
    assert {"base", "v1"} == {version for version, _ in answers}
    # every answer is exactly what its own version says, never a mix
    assert all(text == expected[version] for version, text in answers)
    assert "v1" == answers[-1][0]
