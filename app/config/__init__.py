"""Configuration: one dataclass per component, read once at the entry point.

Sources, later ones winning: an optional TOML file (`--config FILE`), the
environment (`RLHF_CHAT_<SECTION>_<FIELD>`, e.g. `RLHF_CHAT_SERVING_PORT=8000`, plus
`RLHF_CHAT_DATA` for the data directory), then command-line flags. Every value is
validated once, with a message that names the setting to change.

    sections  the web process's sections (storage, serving, auth, arena, backup)
    loading   `Config` (every section, the trainer's too) and `load_config`
"""

from app.config.loading import Config, load_config
from app.config.sections import (
    ArenaConfig,
    AuthConfig,
    BackupConfig,
    ConfigError,
    ServingConfig,
    StorageConfig,
)

__all__ = [
    "ArenaConfig",
    "AuthConfig",
    "BackupConfig",
    "Config",
    "ConfigError",
    "ServingConfig",
    "StorageConfig",
    "load_config",
]
