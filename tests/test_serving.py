import threading

import pytest
import torch

from app.serving.backend import BackendError, SamplingParams, UnknownVersion
from app.serving.local import LocalBackend
from app.serving.scripted import ScriptedBackend
from tests.adapters import random_adapter

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)
PROMPT = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def backend(tiny_model, tokenizer):
    b = LocalBackend(tiny_model, tokenizer, max_batch_size=4, batch_window_s=0.2)
    yield b
    b.close()


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "v1": random_adapter(tiny_model_dir, root / "v1", 1),
        "v2": random_adapter(tiny_model_dir, root / "v2", 2),
    }


def test_stream_yields_deltas_that_join_to_the_answer(backend):
    reply = backend.stream(PROMPT, params=SamplingParams(max_new_tokens=12))
    deltas = list(reply)
    assert "base" == reply.version
    assert reply.finish_reason in ("stop", "length")
    assert 1 <= reply.n_tokens <= 12
    assert all(isinstance(d, str) for d in deltas)


def test_greedy_is_deterministic(backend):
    first = backend.stream(PROMPT, params=GREEDY).text()
    assert first == backend.stream(PROMPT, params=GREEDY).text()


def test_length_limit_is_per_request(backend):
    short = backend.stream(PROMPT, params=SamplingParams(temperature=0, max_new_tokens=2))
    long = backend.stream(PROMPT, params=SamplingParams(temperature=0, max_new_tokens=9))
    short.text(), long.text()
    assert 2 >= short.n_tokens
    assert short.n_tokens < long.n_tokens or long.finish_reason == "stop"


def test_each_request_gets_its_own_version_even_in_one_batch(backend, adapters):
    for name, path in adapters.items():
        backend.load(name, path)
    alone = {
        v: backend.stream(PROMPT, version=v, params=GREEDY).text() for v in ("base", "v1", "v2")
    }
    assert len(set(alone.values())) == 3  # the adapters really change the answer
    # submitted back to back, the three land in one batch with different adapters
    together = {v: backend.stream(PROMPT, version=v, params=GREEDY) for v in ("base", "v1", "v2")}
    assert alone == {v: r.text() for v, r in together.items()}
    assert {"base": "base", "v1": "v1", "v2": "v2"} == {v: r.version for v, r in together.items()}


def test_live_switch_and_unload(backend, adapters):
    base_answer = backend.stream(PROMPT, params=GREEDY).text()
    backend.load("v1", adapters["v1"])
    backend.set_live("v1")
    assert "v1" == backend.stream(PROMPT, params=GREEDY).version
    with pytest.raises(BackendError):
        backend.unload("v1")
    backend.set_live("base")
    backend.unload("v1")
    assert ["base"] == backend.versions()
    with pytest.raises(UnknownVersion):
        backend.stream(PROMPT, version="v1")
    # with its last adapter gone the backend serves the base model again
    again = backend.stream(PROMPT, params=GREEDY)
    assert ("base", base_answer) == (again.version, again.text())


def test_many_concurrent_chats_all_finish(backend):
    results, errors = [], []

    def chat(i):
        try:
            reply = backend.stream(
                [{"role": "user", "content": f"Question {i}?"}],
                params=SamplingParams(max_new_tokens=6),
            )
            results.append((reply.text(), reply.finish_reason))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [] == errors
    assert 8 == len(results)
    assert all(reason in ("stop", "length") for _, reason in results)


def test_model_failure_reaches_the_reader_as_a_short_message(tokenizer):
    class Broken(torch.nn.Module):
        generation_config = None

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, **kwargs):
            raise RuntimeError("CUDA exploded at 0xdeadbeef")

    backend = LocalBackend(Broken(), tokenizer)
    try:
        with pytest.raises(BackendError, match="the model failed to answer; try again"):
            backend.stream(PROMPT).text()
    finally:
        backend.close()


def test_scripted_backend_streams_words():
    backend = ScriptedBackend(lambda messages, version: f"{version} says hi")
    reply = backend.stream(PROMPT)
    assert ["base", " says", " hi"] == list(reply)
    assert (3, "stop") == (reply.n_tokens, reply.finish_reason)
