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
        reward=tiny_reward_config(model_dir, epochs=1),
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


def test_too_few_pairs_is_a_skip_that_says_how_many_more(store, tmp_path, tiny_model_dir):
    add_marker_battles(store, 12, users=1)
    config = training_config(tmp_path, tiny_model_dir)
    config = replace(config, reward=replace(config.reward, min_pairs=32))
    result = run_cycle(store, config)
    assert "skipped" == result.status
    run = store.get_run(result.run_id)
    assert run.status == "skipped"
    assert run.error.startswith(
        "reward model not trained: 12 preference pairs, 32 needed (reward.min_pairs): "
        "20 more decisive judgments"
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


def add_battles(store, winner, loser, outcomes, user=None):
    user = user or store.create_user()
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
    voter = store.create_user()
    add_battles(store, "v1", "base", ["a", "a", "tie"], voter)
    assert [] == judge_canaries(store, config)  # 3 votes: not enough yet
    add_battles(store, "v1", "base", ["both_bad", "b"], voter)
    assert (2.5, 4) == head_to_head(store, "v1", "base")  # both-bad left out, tie half
    assert [("v1", "promoted")] == judge_canaries(store, config)
    add_battles(store, "v2", "v1", ["b", "b", "b", "a"])
    assert [("v2", "retired")] == judge_canaries(store, config)
    assert ("v1", "retired") == (store.live_version().name, store.get_version("v2").status)


def test_canary_votes_are_weighted_per_user(store, tmp_path):
    """One keen voter among several cannot carry a canary by voting often."""
    store.add_version("policy", "v1", path=str(tmp_path))
    keen = store.create_user()
    add_battles(store, "v1", "base", ["a"] * 20, keen)
    for _ in range(5):
        add_battles(store, "v1", "base", ["b"])
    wins, total = head_to_head(store, "v1", "base")
    assert total == 25  # every vote counted for the minimum
    # 6 voters, share 0.2: the keen one weighs C = 0.2 (C + 5) = 1.25 against 5 losses
    assert wins / total == pytest.approx(0.2)
    assert head_to_head(store, "v1", "base", max_user_share=1.0)[0] == pytest.approx(20)
    config = CycleConfig(canary_min_votes=4, canary_win_rate=0.6)
    assert [("v1", "retired")] == judge_canaries(store, config)


def test_ppo_prompts_are_weighted_per_user(store):
    from trainer.cycle import _prompts

    keen = store.create_user()
    conversation = store.create_conversation(keen.id)
    for i in range(40):
        store.add_message(conversation.id, "user", f"keen {i}")
    others = [store.create_user() for _ in range(8)]
    for user in others:
        conversation = store.create_conversation(user.id)
        store.add_message(conversation.id, "user", f"other {user.id}")
    prompts = [p[-1]["content"] for p in _prompts(store, 0.2)]
    # C = 0.2 (C + 8) = 2: the keen user's 2 most recent prompts and everyone else's
    assert sorted(prompts) == sorted(["keen 39", "keen 38"] + [f"other {u.id}" for u in others])
    assert len(_prompts(store, 1.0)) == 48
    alone = [p for p in _prompts(store, 0.2) if p[-1]["content"].startswith("keen")]
    assert len(alone) == 2


def test_one_user_alone_trains_and_exports_every_vote(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    """40 decisive votes from one person: `train --once` trains (promoted or rejected by
    the gate, never skipped for a share), `export --format trl-pairs` writes 40 pairs."""
    import json

    from app.cli import main
    from storage import Store

    store = Store(tmp_path / "chat.db")
    add_marker_battles(store, 40, users=1)
    store.close()
    env = {
        "RLHF_CHAT_MODEL_SOURCE": str(tiny_model_dir),
        "RLHF_CHAT_SCHEDULE_IN_CHILD_PROCESS": "false",
        "RLHF_CHAT_REWARD_MAX_LENGTH": "128",
        "RLHF_CHAT_REWARD_NORMALIZE_SAMPLES": "4",
        "RLHF_CHAT_REWARD_NORMALIZE_MAX_NEW_TOKENS": "4",
        "RLHF_CHAT_PPO_ROLLOUT_BATCH_SIZE": "4",
        "RLHF_CHAT_PPO_MINIBATCH_SIZE": "2",
        "RLHF_CHAT_PPO_PPO_EPOCHS": "1",
        "RLHF_CHAT_PPO_MAX_NEW_TOKENS": "6",
        "RLHF_CHAT_PPO_GENERATION_BATCH_SIZE": "4",
        "RLHF_CHAT_CYCLE_PPO_ROUNDS": "1",
        "RLHF_CHAT_CYCLE_HELDOUT_PROMPTS": "4",
        "RLHF_CHAT_GATE_SAMPLES": "2",
        "RLHF_CHAT_GATE_MAX_NEW_TOKENS": "8",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["train", "--once", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    store = Store(tmp_path / "chat.db")
    try:
        [cycle] = store.runs("cycle")
        assert cycle.status == "succeeded", cycle.error
        assert cycle.metrics["outcome"] in ("promoted", "rejected")
        [reward] = store.runs("reward")
        assert reward.metrics["data"]["users"] == {"1": {"kept": 40, "weight": 1.0, "share": 1.0}}
    finally:
        store.close()
    out = tmp_path / "pairs.jsonl"
    args = ["export", "--data-dir", str(tmp_path), "--format", "trl-pairs", "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and {r["user_id"] for r in rows} == {1}
    assert main([*args, "--as-trained"]) == 0
    assert len(out.read_text().splitlines()) == 40
