"""The real SmolLM2-135M-Instruct weights, converted from the embedded GGUF."""

import pytest

from app.serving.backend import SamplingParams
from app.serving.local import LocalBackend

pytestmark = pytest.mark.slow


def test_greedy_capital_of_france_mentions_paris(smollm2_dir):
    backend = LocalBackend.from_pretrained(str(smollm2_dir))
    try:
        reply = backend.stream(
            [{"role": "user", "content": "What is the capital of France?"}],
            params=SamplingParams(temperature=0.0, max_new_tokens=24),
        )
        answer = reply.text()
    finally:
        backend.close()
    assert "Paris" in answer
    assert ("base", "stop") == (reply.version, reply.finish_reason)
