"""`Config`, every section in one object, and `load_config`: TOML, then environment, then
flags, each value coerced to its field's type."""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from app.config.sections import (
    ArenaConfig,
    AuthConfig,
    BackupConfig,
    ConfigError,
    ServingConfig,
    StorageConfig,
)
from trainer.config import ModelConfig
from trainer.cycle_config import CycleConfig, GateConfig, ScheduleConfig, TrainingConfig
from trainer.ppo_config import PPOConfig
from trainer.reward_config import RewardConfig

ENV_PREFIX = "RLHF_CHAT_"


@dataclass
class Config:
    """Everything, one section per component."""

    model: ModelConfig = field(default_factory=ModelConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    arena: ArenaConfig = field(default_factory=ArenaConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def training(self) -> TrainingConfig:
        """What one training cycle needs, as the trainer's own config."""
        return TrainingConfig(
            data_dir=self.storage.data_dir,
            model=self.model,
            reward=self.reward,
            ppo=self.ppo,
            # the gate measures length and missing EOS where users see answers
            gate=replace(
                self.gate, max_new_tokens=self.gate.max_new_tokens or self.serving.max_new_tokens
            ),
            cycle=self.cycle,
        )


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config from TOML, then environment, then `overrides` ("section.field": value)."""
    values: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env = os.environ if env is None else env
    for section_name, section_type in _sections().items():
        section = values.setdefault(section_name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{section_name}] in the config file must be a table")
        for f in fields(section_type):
            key = f"{ENV_PREFIX}{section_name}_{f.name}".upper()
            if key in env:
                section[f.name] = env[key]
    if "RLHF_CHAT_DATA" in env:
        values["storage"]["data_dir"] = env["RLHF_CHAT_DATA"]
    if env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID"):  # a Space with `hf_oauth: true`
        values["auth"].setdefault("space_id", env["SPACE_ID"])
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section_name, _, field_name = dotted.partition(".")
        values.setdefault(section_name, {})[field_name] = value
    return _build(values)


def _sections() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}


def _build(values: dict[str, dict[str, Any]]) -> Config:
    unknown = set(values) - set(_sections())
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    built = {}
    for section_name, section_type in _sections().items():
        raw = values.get(section_name, {})
        hints = typing.get_type_hints(section_type)
        known = {f.name for f in fields(section_type)}
        extra = set(raw) - known
        if extra:
            raise ConfigError(
                f"unknown setting(s) in [{section_name}]: {', '.join(sorted(extra))}; "
                f"known: {', '.join(sorted(known))}"
            )
        kwargs = {
            name: _coerce(f"{section_name}.{name}", value, hints[name])
            for name, value in raw.items()
        }
        try:
            built[section_name] = section_type(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc
    return Config(**built)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return hint(value)
        if hint is Path:
            return Path(value)
        if hint is str:
            return str(value)
        if typing.get_origin(hint) in (list, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        if is_dataclass(hint):
            raise ValueError(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be a {getattr(hint, '__name__', hint)}, not {value!r}"
        ) from exc
    return value
