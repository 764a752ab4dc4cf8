import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help_and_is_documented(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert 0 == exit_info.value.code
    assert "usage: rlhf-chat" in capsys.readouterr().out
    assert f"rlhf-chat {name}" in README


def test_python_dash_m_app_runs():
    out = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in out


def test_configuration_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[serving]\nport = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert 2 == result.returncode
    assert "configuration error: serving.port" in result.stderr
