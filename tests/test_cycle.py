"""One training cycle on the tiny model: skip, train and promote, gate, crash safety,
and the canary judge."""

from dataclasses import replace

import pytest

from tests.test_reward import add_marker_battles
from tests.test_reward import tiny_config as tiny_reward_config
from trainer.config import ModelConfig
from trainer.cycle import head_to_head, judge_canaries, run_cycle
from trainer.cycle_config import CycleConfig, GateConfig, TrainingConfig
from trainer.ppo_config import PPOConfig

PERMISSIVE_GATE = GateConfig(
    samples=8,
    non_inferiority_margin=1e9,
    min_reward_gain=-1e9,
    max_length_drift=100,
    max_no_eos_increase=1.0,
    min_reward_agreement=0.0,
)


def training_config(data_dir, model_dir, *, gate=PERMISSIVE_GATE, **cycle):
    return TrainingConfig(
        data_dir=data_dir,
        model=ModelConfig(source=str(model_dir)),
        reward=tiny_reward_config(model_dir, user_share_cap=1.0, epochs=1),
        ppo=PPOConfig(
            rollout_batch_size=4,
            minibatch_size=2,
            ppo_epochs=1,
            max_new_tokens=6,
            generation_batch_size=4,
        ),
        gate=gate,
        cycle=CycleConfig(
            **{"min_new_feedback": 10, "ppo_rounds": 1, "heldout_prompts": 4, **cycle}
        ),
    )


@pytest.fixture
def voted(store):
    add_marker_battles(store, 24)
    return store


def test_too_little_new_feedback_is_a_recorded_skip(store, tmp_path, tiny_model_dir):
    result = run_cycle(store, training_config(tmp_path, tiny_model_dir))
    assert "skipped" == result.status
    run = store.get_run(result.run_id)
    assert (
        "skipped",
        "0 new judgments since the last cycle, 10 needed (cycle.min_new_feedback)",
    ) == (
        run.status,
        run.error,
    )


def test_a_cycle_trains_publishes_and_promotes(voted, tmp_path, tiny_model_dir):
    store = voted
    result = run_cycle(store, training_config(tmp_path, tiny_model_dir))
    assert ("promoted", "v1") == (result.status, result.version)
    live = store.live_version()
    assert ("v1", "base") == (live.name, store.get_version_by_id(live.parent_id).name)
    assert (tmp_path / "adapters" / "v1" / "adapter_config.json").exists()
    assert "reward" == store.live_version("reward").kind
    run = store.get_run(result.run_id)
    assert ("succeeded", "promoted", "promote") == (
        run.status,
        run.metrics["outcome"],
        run.metrics["stage"],
    )
    assert {"kl", "mean_reward", "reward_model_accuracy", "beta"} <= set(store.run_metrics(run.id))
    # nothing new since: the next scheduled cycle skips
    assert "skipped" == run_cycle(store, training_config(tmp_path, tiny_model_dir)).status


def test_the_gate_rejects_a_candidate_over_the_kl_budget(voted, tmp_path, tiny_model_dir):
    store = voted
    gate = replace(PERMISSIVE_GATE, max_kl_per_token=1e-9)
    result = run_cycle(store, training_config(tmp_path, tiny_model_dir, gate=gate))
    assert "rejected" == result.status
    assert "base" == store.live_version().name
    rejected = store.get_version("v1")
    assert "rejected" == rejected.status
    assert any("over the budget 1e-09" in r for r in rejected.metrics["gate_reasons"])


@pytest.mark.parametrize("stage", ["reward", "ppo", "publish", "promote"])
def test_a_crash_at_any_stage_changes_nothing_served(voted, tmp_path, tiny_model_dir, stage):
    store = voted
    config = training_config(tmp_path, tiny_model_dir)

    def crash(name):
        if name == stage:
            raise RuntimeError(f"killed at {name}")

    with pytest.raises(RuntimeError):
        run_cycle(store, config, stage_hook=crash)
    assert "base" == store.live_version().name
    failed = store.runs("cycle")[0]
    assert ("failed", f"RuntimeError: killed at {stage}") == (failed.status, failed.error)
    versions = {v.name: v.status for v in store.versions()}
    if stage == "promote":  # published whole before the crash: a candidate, not live
        assert {"base": "live", "v1": "candidate"} == versions
        assert (tmp_path / "adapters" / "v1" / "adapter_config.json").exists()
    else:  # no half-written version, and no stray adapter directory
        assert {"base": "live"} == versions
        assert not (tmp_path / "adapters" / "v1").exists()
    if stage == "ppo":
        assert "promoted" == run_cycle(store, config).status  # the next cycle succeeds


def add_battles(store, winner, loser, outcomes):
    user = store.create_user()
    conversation = store.create_conversation(user.id)
    for outcome in outcomes:
        q = store.add_message(conversation.id, "user", "q")
        a = store.add_message(conversation.id, "assistant", "x", parent_id=q.id, version=winner)
        b = store.add_message(conversation.id, "assistant", "y", parent_id=q.id, version=loser)
        battle = store.create_battle(user.id, q.id, a.id, b.id, pairing="candidate_vs_live")
        store.vote_battle(battle.id, user.id, outcome)


def test_canary_promotes_a_winner_and_retires_a_loser(store, tmp_path):
    store.add_version("policy", "v1", path=str(tmp_path))
    store.add_version("policy", "v2", path=str(tmp_path))
    config = CycleConfig(canary_min_votes=4, canary_win_rate=0.6)
    add_battles(store, "v1", "base", ["a", "a", "tie"])
    assert [] == judge_canaries(store, config)  # 3 votes: not enough yet
    add_battles(store, "v1", "base", ["both_bad", "b"])
    assert (2.5, 4) == head_to_head(store, "v1", "base")  # both-bad left out, tie half
    assert [("v1", "promoted")] == judge_canaries(store, config)
    add_battles(store, "v2", "v1", ["b", "b", "b", "a"])
    assert [("v2", "retired")] == judge_canaries(store, config)
    assert ("v1", "retired") == (store.live_version().name, store.get_version("v2").status)
