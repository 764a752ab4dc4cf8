"""The import rules of the design: each package is a room with doors."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SQL_MODULES = {"sqlite3", "sqlite_utils"}
# app/ reaches training through the cycle and the scheduler; it may also read the shared
# model-loading and config modules (loading a model is not training) and the command
# line may call any trainer entry point. Component configs (trainer/*config.py) are data.
APP_MAY_IMPORT = {"trainer.cycle", "trainer.schedule", "trainer.models", "trainer.config"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", files("storage"), ids=str)
def test_storage_imports_no_torch_app_or_trainer(path):
    assert not {top(n) for n in imports(path)} & {"torch", "transformers", "app", "trainer"}


@pytest.mark.parametrize("path", files("trainer"), ids=str)
def test_trainer_imports_no_gradio_app_or_sql(path):
    assert not {top(n) for n in imports(path)} & {"gradio", "app", *SQL_MODULES}


def test_losses_import_only_torch():
    path = REPO / "trainer" / "losses.py"
    if not path.exists():
        pytest.skip("trainer/losses.py not written yet")
    allowed = {"torch", "__future__", "math", "dataclasses", "typing"}
    assert {top(n) for n in imports(path)} <= allowed


@pytest.mark.parametrize("path", files("app"), ids=str)
def test_app_uses_no_sql_and_reaches_training_only_through_its_doors(path):
    names = imports(path)
    assert not {top(n) for n in names} & SQL_MODULES
    if path.name == "cli.py":
        return
    trainer_imports = {n for n in names if top(n) == "trainer" and not n.endswith("config")}
    assert trainer_imports <= APP_MAY_IMPORT


@pytest.mark.parametrize("path", files("app") + files("trainer"), ids=str)
def test_no_sql_strings_outside_storage(path):
    text = path.read_text().upper()
    for statement in ("SELECT * FROM", "INSERT INTO", "CREATE TABLE", "UPDATE MODEL_VERSIONS"):
        assert statement not in text
