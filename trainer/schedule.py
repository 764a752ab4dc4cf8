"""Running training cycles: on a schedule in the server, or once from the shell.

APScheduler 3.11's `BackgroundScheduler` fires the job (`max_instances=1`,
`coalesce=True`: a late or overlapping tick runs once, never twice at the same
time). The cycle's heavy work runs in a child process, so a crash or an OOM kill in
training cannot take the chat down; when the child dies, this side records the
failure (APScheduler itself would only log it). A lock file in the data directory
keeps a cycle started from the shell and one started by the server from overlapping.
The child holds that lock too, so a cycle whose parent was killed still keeps others
out until it ends; a cycle left `running` when its whole process tree died is recorded
as failed by the next process that takes the lock.

`run_launched` is the one cycle of `rlhf-chat train --once` under a multi-process
launch (`accelerate launch`, `torchrun`): see trainer.distributed.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from multiprocessing import reduction
from pathlib import Path
from typing import Any

from storage import Store
from trainer.cycle_config import ScheduleConfig, TrainingConfig

log = logging.getLogger(__name__)

JOB_ID = "training-cycle"
LOCK_FILE = "training.lock"
DEFAULT_CYCLE = "trainer.cycle:run_cycle"
ABANDONED = "abandoned: the process running it died before it finished"


class TrainingBusy(RuntimeError):
    """Another cycle is running (in this process or another)."""


def import_function(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"expected MODULE:FUNC, got {spec!r}")
    return getattr(importlib.import_module(module), name)


@contextmanager
def training_lock(data_dir: Path) -> Iterator[int]:
    """Held for a whole cycle; refuses at once (TrainingBusy) rather than waiting.
    Yields the lock file's descriptor: any process that shares it holds the lock."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TrainingBusy("a training cycle is already running") from exc
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


class _SharedFd:
    """A descriptor that a spawned child receives as the same open file, the way
    multiprocessing hands over its pipes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup: Any) -> _SharedFd:
    return _SharedFd(dup.detach())


def _child(
    db_path: str,
    config: TrainingConfig,
    force: bool,
    cycle: str,
    conn: Any,
    lock: _SharedFd | None = None,
) -> None:
    # `lock` stays open until this process exits: should the parent die first, the
    # training lock is still held and no second cycle starts beside this one.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = Store(db_path)
    try:
        result = import_function(cycle)(store, config, force=force)
        conn.send({"status": getattr(result, "status", "succeeded"), "summary": str(result)})
    finally:
        store.close()


class TrainingScheduler:
    """Runs `cycle(store, config, force=...)`, in a child process by default."""

    def __init__(
        self,
        db_path: Path,
        config: TrainingConfig,
        schedule: ScheduleConfig,
        *,
        cycle: str = DEFAULT_CYCLE,
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self.schedule = schedule
        self.cycle = cycle
        self.scheduler: Any = None
        self._busy = threading.Lock()
        self.last_result: dict[str, Any] | None = None

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def trigger(self) -> Any:
        """The APScheduler trigger from the config: cron if set, else an interval."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.schedule.cron:
            return CronTrigger.from_crontab(self.schedule.cron)
        return IntervalTrigger(minutes=self.schedule.interval_minutes)

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(
            self._scheduled_run,
            self.trigger(),
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)

    def _scheduled_run(self) -> None:
        try:
            self.run_once()
        except TrainingBusy:
            log.info("scheduled cycle skipped: one is already running")

    def trigger_now(self, *, force: bool = False) -> bool:
        """Start a cycle in the background now; False when one is already running."""
        if self.busy:
            return False
        thread = threading.Thread(target=self._run_quietly, args=(force,), daemon=True)
        thread.start()
        return True

    def _run_quietly(self, force: bool) -> None:
        try:
            self.run_once(force=force)
        except TrainingBusy:
            log.info("cycle not started: one is already running")

    def run_once(self, *, force: bool = False) -> dict[str, Any]:
        """One cycle, start to end. Raises TrainingBusy if one is running."""
        if not self._busy.acquire(blocking=False):
            raise TrainingBusy("a training cycle is already running in this process")
        try:
            with training_lock(self.config.data_dir) as lock_fd:
                self._fail_abandoned_runs(self.db_path)
                if self.schedule.in_child_process:
                    self.last_result = self._run_in_child(force, lock_fd)
                else:
                    self.last_result = self._run_here(force)
                return self.last_result
        finally:
            self._busy.release()

    @staticmethod
    def _fail_abandoned_runs(db_path: Path) -> None:
        """With the lock held no earlier cycle's process is alive (its child shares the
        lock), so a cycle still `running` died with its whole process tree, a killed
        server or worker: record it, and the runs recorded after it, as failed."""
        store = Store(db_path)
        try:
            stale = [r.id for r in store.runs("cycle") if r.status == "running"]
            if stale:
                failed = store.fail_abandoned_runs(ABANDONED, after_id=min(stale) - 1)
                log.warning("recorded %d abandoned training run(s) as failed", failed)
        finally:
            store.close()

    def _run_here(self, force: bool) -> dict[str, Any]:
        store = Store(self.db_path)
        try:
            result = import_function(self.cycle)(store, self.config, force=force)
            return {"status": getattr(result, "status", "succeeded"), "summary": str(result)}
        finally:
            store.close()

    def _run_in_child(self, force: bool, lock_fd: int) -> dict[str, Any]:
        store = Store(self.db_path)
        try:
            before = store.last_run_id()
            ctx = multiprocessing.get_context("spawn")
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(
                target=_child,
                args=(str(self.db_path), self.config, force, self.cycle, send, _SharedFd(lock_fd)),
                name="training-cycle",
            )
            child.start()
            send.close()
            child.join()
            if child.exitcode == 0 and receive.poll():
                return receive.recv()
            error = f"training process exited with code {child.exitcode}"
            failed = store.fail_abandoned_runs(error, after_id=before)
            if failed == 0:  # it died before recording anything: record the failure here
                run = store.start_run("cycle")
                store.finish_run(run.id, "failed", error=error)
            log.error("%s; the served model is unchanged", error)
            return {"status": "failed", "error": error}
        finally:
            store.close()


def run_launched(
    db_path: Path, config: TrainingConfig, *, force: bool = False, cycle: str = DEFAULT_CYCLE
) -> dict[str, Any]:
    """One cycle, data-parallel over the processes a launcher started; call it in each.

    The main process takes the training lock (TrainingBusy is raised in every process
    when another cycle holds it) and alone opens the store. The cycle runs in the
    launched processes themselves, not in children: the launcher already keeps them
    apart from the server, and it stops them all when one dies.
    """
    from trainer import distributed

    devices = (config.ppo.device, config.reward.device)
    distributed.start(cuda=any(d.startswith("cuda") for d in devices))
    config = replace(
        config,
        ppo=replace(config.ppo, device=distributed.local_device(config.ppo.device)),
        reward=replace(config.reward, device=distributed.local_device(config.reward.device)),
    )
    try:
        with ExitStack() as held:
            busy = distributed.on_main(_take_lock, held, db_path, config.data_dir)
            if busy:
                raise TrainingBusy(busy)
            store = Store(db_path) if distributed.is_main() else None
            try:
                result = import_function(cycle)(store, config, force=force)
            except Exception as exc:
                log.exception("training cycle failed in process %d", distributed.rank())
                return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            finally:
                if store is not None:
                    store.close()
        return {"status": getattr(result, "status", "succeeded"), "summary": str(result)}
    finally:
        distributed.stop()


def _take_lock(held: ExitStack, db_path: Path, data_dir: Path) -> str:
    """Hold the training lock until `held` closes; why not, when another cycle has it.
    A launch's main process holds it for the whole cycle, so once it is taken a cycle
    still `running` is one whose launch died."""
    try:
        held.enter_context(training_lock(data_dir))
    except TrainingBusy as exc:
        return str(exc)
    TrainingScheduler._fail_abandoned_runs(db_path)
    return ""
