"""Start `rlhf-chat serve` as a child process on a free port, for the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Hurt it (crash tests): send `sig` and wait for the process to end."""
        self.process.send_signal(sig)
        self.process.wait(timeout=60)


def wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # a starting process has no event to wait on
    raise TimeoutError(f"the server was not healthy after {timeout:.0f}s:\n{server.log_tail()}")


@contextmanager
def running_server(
    data_dir: Path,
    *,
    backend: str = "local",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    start_timeout: float = 900,
) -> Iterator[Server]:
    """`rlhf-chat serve` on a free port with `data_dir`, the caller's environment plus
    `env`; its output goes to `data_dir/server.log`. Stopped on exit."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir / "server.log"
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--backend", backend]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, *args],
            env={**os.environ, "RLHF_CHAT_DATA": str(data_dir), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    try:
        wait_healthy(server, start_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:  # open page connections can hold a graceful exit: do not wait long
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
