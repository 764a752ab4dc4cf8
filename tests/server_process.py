"""The real server as a child process, for end-to-end tests (bench/server.py starts it).

Tests default to the scripted backend, a short start timeout and no training schedule.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.server import Server, free_port
from bench.server import running_server as _running_server

__all__ = ["Server", "free_port", "running_server"]


@contextmanager
def running_server(
    data_dir: Path, *, backend: str = "scripted", env: dict[str, str] | None = None
) -> Iterator[Server]:
    quiet = {"RLHF_CHAT_SCHEDULE_ENABLED": "false", **(env or {})}
    with _running_server(data_dir, backend=backend, env=quiet, start_timeout=300) as server:
        yield server
