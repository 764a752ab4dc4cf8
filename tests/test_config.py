import re

import pytest

from app.config import ConfigError, load_config


def test_defaults():
    config = load_config(env={})
    assert ("127.0.0.1", 7860, "embedded") == (
        config.serving.host,
        config.serving.port,
        config.model.source,
    )


def test_toml_then_env_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[serving]\nport = 8001\nhost = "0.0.0.0"\n[model]\nsource = "/m"\n')
    config = load_config(
        path,
        env={"RLHF_CHAT_SERVING_PORT": "8002", "RLHF_CHAT_DATA": "/d"},
        overrides={"serving.port": 8003, "serving.host": None},
    )
    assert (8003, "0.0.0.0", "/m", "/d") == (
        config.serving.port,
        config.serving.host,
        config.model.source,
        str(config.storage.data_dir),
    )


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[serving]\nport = 0\n", {}, "serving.port"),
        ("[serving]\nprot = 1\n", {}, "unknown setting(s) in [serving]: prot"),
        ("[servng]\n", {}, "unknown config section(s): servng"),
        ("", {"RLHF_CHAT_SERVING_PORT": "eighty"}, "serving.port must be a int"),
        ("[serving]\ntemperature = 3.0\n", {}, "serving.temperature"),
        ("[model]\ndtype = 'int3'\n", {}, "model.dtype"),
        ("[serving\n", {}, "not valid TOML"),
    ],
)
def test_bad_settings_name_what_to_change(tmp_path, toml, env, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env=env)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.toml", env={})
