import threading

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tests import cycle_doubles
from trainer.cycle_config import ScheduleConfig, TrainingConfig
from trainer.schedule import ABANDONED, JOB_ID, TrainingBusy, TrainingScheduler


def scheduler(store, tmp_path, cycle, **schedule):
    return TrainingScheduler(
        store.path,
        TrainingConfig(data_dir=tmp_path),
        ScheduleConfig(**schedule),
        cycle=f"tests.cycle_doubles:{cycle}",
    )


def test_exactly_one_job_with_the_interval_trigger(store, tmp_path):
    s = scheduler(store, tmp_path, "succeed", interval_minutes=30)
    s.start()
    try:
        jobs = s.scheduler.get_jobs()
        assert [JOB_ID] == [j.id for j in jobs]
        assert isinstance(jobs[0].trigger, IntervalTrigger)
        assert 1800 == jobs[0].trigger.interval.total_seconds()
        assert (1, True) == (jobs[0].max_instances, jobs[0].coalesce)
    finally:
        s.shutdown()


def test_cron_trigger_from_config(store, tmp_path):
    s = scheduler(store, tmp_path, "succeed", cron="0 3 * * *")
    trigger = s.trigger()
    assert isinstance(trigger, CronTrigger)
    assert "3" == str(trigger.fields[trigger.FIELD_NAMES.index("hour")])


def test_never_two_cycles_at_once(store, tmp_path):
    cycle_doubles.release.clear()
    cycle_doubles.entered.clear()
    s = scheduler(store, tmp_path, "block_until_released", in_child_process=False)
    first = threading.Thread(target=s.run_once)
    first.start()
    assert cycle_doubles.entered.wait(timeout=30)
    assert s.busy
    with pytest.raises(TrainingBusy):
        s.run_once()
    assert s.trigger_now() is False
    # a second scheduler (another process, such as `rlhf-chat train --once`) is refused too
    other = scheduler(store, tmp_path, "succeed", in_child_process=False)
    with pytest.raises(TrainingBusy):
        other.run_once()
    cycle_doubles.release.set()
    first.join(timeout=30)
    assert "promoted" == other.run_once()["status"]  # free again once the first ended
    assert not s.busy


def test_a_killed_training_child_is_recorded_and_the_next_cycle_runs(store, tmp_path):
    store.add_version("policy", "v1", path=str(tmp_path))
    store.promote("v1")
    result = scheduler(store, tmp_path, "die_mid_cycle").run_once()
    assert "failed" == result["status"]
    runs = {r.kind: r for r in store.runs()}
    assert ("failed", "failed") == (runs["cycle"].status, runs["ppo"].status)
    assert "exited with code -9" in runs["cycle"].error
    assert "v1" == store.live_version().name  # live unchanged
    assert ["base", "v1"] == [v.name for v in store.versions()]  # nothing half-written
    assert "promoted" == scheduler(store, tmp_path, "succeed").run_once()["status"]


def test_a_cycle_left_running_by_a_dead_process_tree_is_failed_by_the_next(store, tmp_path):
    """Server and child killed together: nobody saw the end, so the next lock holder
    records it (a cycle still alive would hold the lock: its child shares it)."""
    stale = store.start_run("cycle")
    store.set_run_stage(stale.id, "ppo")
    store.start_run("ppo")
    assert "promoted" == scheduler(store, tmp_path, "succeed").run_once()["status"]
    assert [
        ("cycle", "failed", ABANDONED),
        ("ppo", "failed", ABANDONED),
        ("cycle", "succeeded", None),
    ] == [(r.kind, r.status, r.error) for r in reversed(store.runs())]
