"""A real training cycle process killed with SIGKILL at each stage (issue #9).

`rlhf-chat train --once` runs the cycle in a spawned child, as the server's scheduler
does. The child is killed once the store records the stage (with the reward or PPO run
under way for those stages); then the live version is unchanged, nothing half-written
is visible, the run is recorded as failed, the lock is free and the next
`train --once` promotes. `cycle.stage_pause_seconds` holds each stage open long enough
to be hit: publish and promote otherwise last milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import Store
from tests.test_loop_e2e import tiny_loop_env
from tests.test_reward import add_marker_battles
from trainer.publish import ADAPTERS, tree_sha256
from trainer.schedule import ABANDONED, TrainingBusy, training_lock

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds children in /proc"),
]

STAGES = ("data", "reward", "ppo", "publish", "promote")
PAUSE = {"RLHF_CHAT_CYCLE_STAGE_PAUSE_SECONDS": "2"}


def train_once(data_dir: Path, model_dir: Path, env: dict[str, str], log: str):
    """`rlhf-chat train --once` on `data_dir` as a child process; output in `log`."""
    with open(data_dir / log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "train", "--once"],
            env={**os.environ, **tiny_loop_env(model_dir), "RLHF_CHAT_DATA": str(data_dir), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def runs(data_dir: Path) -> list[tuple[int, str, str, str | None, str | None]]:
    """(id, kind, status, stage, error) of every run, read as the dashboard would."""
    conn = sqlite3.connect(data_dir / "chat.db", timeout=30)
    try:
        rows = conn.execute(
            "SELECT id, kind, status, metrics_json, error FROM training_runs ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [(i, k, s, json.loads(m or "{}").get("stage"), e) for i, k, s, m, e in rows]


def at_stage(data_dir: Path, stage: str) -> bool:
    """The cycle has recorded `stage`; for reward and PPO, that run is under way too."""
    found = runs(data_dir)
    cycle = [r for r in found if r[1] == "cycle" and r[2] == "running"]
    if not cycle or cycle[-1][3] != stage:
        return False
    if stage in ("reward", "ppo"):
        return any(r[1] == stage and r[2] == "running" for r in found)
    return True


def cycle_child(parent: subprocess.Popen) -> int:
    """The spawned process that runs the cycle (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    for pid in children:
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise LookupError(f"no cycle process among {children}")


def kill_at(data_dir: Path, train: subprocess.Popen, stage: str, *, whole_tree: bool) -> None:
    deadline = time.monotonic() + 300
    while not at_stage(data_dir, stage):
        assert train.poll() is None, (data_dir / "train-1.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"the cycle never reached {stage}"
        time.sleep(0.1)  # another process's progress: only the store tells
    child = cycle_child(train)
    if whole_tree:  # the parent first: the child must keep the lock without it
        os.kill(train.pid, signal.SIGKILL)
        train.wait(timeout=60)
        with pytest.raises(TrainingBusy), training_lock(data_dir):
            pass
    os.kill(child, signal.SIGKILL)


def assert_nothing_half_written(data_dir: Path) -> list[str]:
    """Every version's files are whole and nothing else is in adapters/; -> policy names."""
    store = Store(data_dir / "chat.db")
    try:
        versions = store.versions(None)
        assert "base" == store.live_version().name
    finally:
        store.close()
    for v in versions:
        if v.path:
            assert Path(v.path).is_dir(), v
            if v.kind == "policy":
                assert v.sha256 == tree_sha256(Path(v.path)), v
    published = {Path(v.path).name for v in versions if v.kind == "policy" and v.path}
    adapters = data_dir / ADAPTERS
    on_disk = {p.name for p in adapters.iterdir()} if adapters.exists() else set()
    assert published == on_disk  # no temporary or unregistered directory
    return [v.name for v in versions if v.kind == "policy"]


def assert_next_cycle_promotes(data_dir: Path, model_dir: Path, expected: str) -> None:
    with training_lock(data_dir):  # the lock died with the processes that held it
        pass
    follow = train_once(data_dir, model_dir, {}, "train-2.log")
    assert 0 == follow.wait(timeout=600), (data_dir / "train-2.log").read_text()[-3000:]
    assert f"promoted {expected}" in (data_dir / "train-2.log").read_text()
    store = Store(data_dir / "chat.db")
    try:
        assert expected == store.live_version().name
        assert [] == [r for r in store.runs() if r.status == "running"]
    finally:
        store.close()
    assert (data_dir / ADAPTERS / expected / "adapter_config.json").exists()


def voted_data_dir(tmp_path: Path) -> Path:
    store = Store(tmp_path / "chat.db")
    try:
        add_marker_battles(store, 24)
    finally:
        store.close()
    return tmp_path


@pytest.mark.slow  # two tiny cycles per stage: about a minute each on a busy 2-core CPU
@pytest.mark.parametrize("stage", STAGES)
def test_a_cycle_process_killed_at_a_stage_changes_nothing_served(tiny_model_dir, tmp_path, stage):
    data_dir = voted_data_dir(tmp_path)
    train = train_once(data_dir, tiny_model_dir, PAUSE, "train-1.log")
    kill_at(data_dir, train, stage, whole_tree=False)
    assert 1 == train.wait(timeout=60)  # the parent noticed and recorded it
    assert "exited with code -9" in (data_dir / "train-1.log").read_text()
    found = runs(data_dir)
    cycle = next(r for r in found if r[1] == "cycle")
    assert ("failed", stage) == (cycle[2], cycle[3])
    assert [] == [r for r in found if r[2] == "running"]
    if stage in ("reward", "ppo"):  # the run under way when it died
        assert "failed" == [r for r in found if r[1] == stage][-1][2]
    names = assert_nothing_half_written(data_dir)
    # killed at promote, the candidate was already published whole; it stays a candidate
    assert (["base", "v1"] if stage == "promote" else ["base"]) == names
    assert_next_cycle_promotes(data_dir, tiny_model_dir, "v2" if stage == "promote" else "v1")


def test_a_dead_process_tree_is_recorded_by_the_next_cycle(tiny_model_dir, tmp_path):
    """The parent killed first (a server or worker gone): its child keeps the lock;
    then the child too: nobody recorded the end, so the next cycle does."""
    data_dir = voted_data_dir(tmp_path)
    train = train_once(data_dir, tiny_model_dir, PAUSE, "train-1.log")
    kill_at(data_dir, train, "ppo", whole_tree=True)
    deadline = time.monotonic() + 60
    while True:  # the lock goes with the child's last descriptor
        try:
            with training_lock(data_dir):
                break
        except TrainingBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert {"running"} == {r[2] for r in runs(data_dir) if r[1] in ("cycle", "ppo")}
    assert ["base"] == assert_nothing_half_written(data_dir)
    assert_next_cycle_promotes(data_dir, tiny_model_dir, "v1")
    abandoned = [(r[1], r[2]) for r in runs(data_dir) if r[4] == ABANDONED]
    assert [("cycle", "failed"), ("ppo", "failed")] == abandoned
