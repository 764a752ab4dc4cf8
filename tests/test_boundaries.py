"""The import rules of the design: each package is a room with doors.

storage/   imports neither app nor trainer, and no torch
trainer/   never imports gradio, app or SQL; trainer/losses.py only torch
app/       no SQL; training only through trainer.cycle, trainer.schedule,
           trainer.models and the config modules, plus trainer.jobs from the CLI
app/http/ and app/page/   never import each other; only app.server imports them
services   (app's flat modules, serving/, config/, simulate/) import neither room,
           nor the CLI, nor a web framework; serving/ imports only config from app
anywhere   no import cycle
"""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "trainer", "storage", "bench")
SQL_MODULES = {"sqlite3", "sqlite_utils"}
WEB_FRAMEWORKS = {"gradio", "fastapi", "starlette"}
# app/ reaches training through the cycle and the scheduler; it may also read the shared
# model-loading module (loading a model is not training). Component configs
# (trainer/*config.py) are data. The command line runs one-off jobs through trainer.jobs.
APP_MAY_IMPORT = {"trainer.cycle", "trainer.schedule", "trainer.models"}
CLI_MAY_IMPORT = APP_MAY_IMPORT | {"trainer.jobs"}
ROOMS = ("app.http", "app.page")
ASSEMBLY = "app.server"
MAX_APP_FILE_LINES = 450
# A cycle that predates this test; the trainer's reward modules are split separately.
KNOWN_CYCLES: list[set[str]] = [{"trainer.reward", "trainer.reward_linear"}]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")
}


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under `if TYPE_CHECKING:` (never imported at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports(path: Path) -> set[str]:
    """The absolute names a file imports, at module level or inside functions;
    `from package import module` names the module."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


def within(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


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
    doors = CLI_MAY_IMPORT if within(module_name(path), "app.cli") else APP_MAY_IMPORT
    trainer_imports = {n for n in names if top(n) == "trainer" and not n.endswith("config")}
    assert trainer_imports <= doors


@pytest.mark.parametrize("path", files("app"), ids=str)
def test_the_page_and_the_http_layer_meet_only_in_the_server(path):
    name = module_name(path)
    for room in ROOMS:
        if name == ASSEMBLY or within(name, room):
            continue
        assert not {n for n in imports(path) if within(n, room)}, f"{name} imports {room}"


@pytest.mark.parametrize("path", files("app"), ids=str)
def test_services_import_no_room_and_no_web_framework(path):
    name = module_name(path)
    if name in (ASSEMBLY, "app.__main__") or any(within(name, r) for r in (*ROOMS, "app.cli")):
        return
    names = imports(path)
    assert not {n for n in names if within(n, "app.cli") or n == ASSEMBLY}
    assert not {top(n) for n in names} & WEB_FRAMEWORKS
    if within(name, "app.serving"):
        from_app = {n for n in names if top(n) == "app"}
        assert all(within(n, "app.serving") or within(n, "app.config") for n in from_app)


@pytest.mark.parametrize("path", files("app"), ids=str)
def test_app_files_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_APP_FILE_LINES


def import_cycles() -> list[set[str]]:
    """Strongly connected groups of more than one module in the project's import graph
    (Tarjan's algorithm)."""
    graph = {name: {n for n in imports(path) if n in MODULES} for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                cycles.append(group)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycle_anywhere():
    new = [cycle for cycle in import_cycles() if cycle not in KNOWN_CYCLES]
    assert [] == new


def test_the_cycle_finder_finds_a_cycle(monkeypatch, tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(f"import {'b' if name == 'a' else 'a'}\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", modules)
    assert [{"a", "b"}] == import_cycles()


@pytest.mark.parametrize("path", files("app") + files("trainer"), ids=str)
def test_no_sql_strings_outside_storage(path):
    text = path.read_text().upper()
    for statement in ("SELECT * FROM", "INSERT INTO", "CREATE TABLE", "UPDATE MODEL_VERSIONS"):
        assert statement not in text
