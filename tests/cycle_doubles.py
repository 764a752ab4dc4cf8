"""Stand-in cycle functions for the scheduler tests (importable by a child process)."""

import os
import signal
import threading
from types import SimpleNamespace

release = threading.Event()
entered = threading.Event()


def succeed(store, config, *, force=False):
    run = store.start_run("cycle")
    store.finish_run(run.id, "succeeded")
    return SimpleNamespace(status="promoted")


def die_mid_cycle(store, config, *, force=False):
    """Like a training process killed by the OOM killer in the middle of PPO."""
    run = store.start_run("cycle")
    store.set_run_stage(run.id, "ppo")
    store.start_run("ppo")
    os.kill(os.getpid(), signal.SIGKILL)


def block_until_released(store, config, *, force=False):
    entered.set()
    release.wait(timeout=60)
    return SimpleNamespace(status="skipped")
