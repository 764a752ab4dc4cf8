"""Shared fixtures: a store on a temp file, the real SmolLM2 tokenizer, a tiny random
Llama that uses it (real LoRA target names, millisecond forward passes), and the
converted embedded checkpoint for the few tests that need real weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# The embedded model is converted once per machine and kept here between runs.
CACHE = Path(os.environ.get("RLHF_CHAT_TEST_CACHE", REPO / ".cache"))


@pytest.fixture
def store(tmp_path):
    from storage import Store

    s = Store(tmp_path / "chat.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted from the embedded GGUF (once, cached)."""
    from trainer.models import convert_embedded

    return convert_embedded(CACHE / "models" / "base")


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from trainer.models import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer, saved as a checkpoint directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model(tiny_model_dir):
    from trainer.models import load_causal_lm

    return load_causal_lm(str(tiny_model_dir))
