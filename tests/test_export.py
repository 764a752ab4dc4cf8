"""Export (trainer/export.py, `rlhf-chat export`): TRL's conversational JSONL formats
and the raw dump, read back with `datasets` and fed to TRL's RewardTrainer."""

from __future__ import annotations

import json

import pytest

from trainer.export import FORMATS, export


@pytest.fixture
def judged(store):
    """One battle won by B, one sibling thumb pair, one lone thumb down, one retry."""
    store.add_version("policy", "v2")
    ann = store.create_user()
    conversation = store.create_conversation(ann.id)
    question = store.add_message(conversation.id, "user", "2+2?")
    four, five = (
        store.add_message(conversation.id, "assistant", text, parent_id=question.id, version=v)
        for text, v in (("four", "base"), ("five", "v2"))
    )
    battle = store.create_battle(ann.id, question.id, five.id, four.id, pairing="canary")
    store.vote_battle(battle.id, ann.id, "b")
    other = store.create_conversation(ann.id)
    q2 = store.add_message(other.id, "user", "3+3?")
    six, seven, eight = (
        store.add_message(other.id, "assistant", text, parent_id=q2.id, version="base")
        for text in ("six", "seven", "eight")
    )
    store.set_thumb(six.id, ann.id, 1)
    store.set_thumb(seven.id, ann.id, -1)
    store.set_thumb(eight.id, ann.id, -1)
    store.add_feedback(seven.id, ann.id, "retry")
    return store


def test_trl_pairs_round_trip(judged, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "pairs.jsonl"
    n, report = export(judged, "trl-pairs", out, heldout_fraction=0.0)
    assert (n, report.pairs) == (2, {"battle": 1, "thumb": 1})
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "four"}],
        "rejected": [{"role": "assistant", "content": "five"}],
        "weight": 1.0,
        "source": "battle",
        "user_id": 1,
        "user_flagged": False,
        "conversation_id": 1,
        "chosen_version": "base",
        "rejected_version": "v2",
        "source_ids": [1],
        "message_ids": [2, 3],
        "split": "train",
    }
    dataset = load_dataset("json", data_files=str(out), split="train")
    assert dataset.column_names == list(first)
    assert dataset["source"] == ["battle", "thumb"]
    assert dataset[1]["chosen"] == [{"role": "assistant", "content": "six"}]
    assert dataset[1]["prompt"] == [{"role": "user", "content": "3+3?"}]


def test_kto_round_trip(judged, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "kto.jsonl"
    n, report = export(judged, "kto", out, heldout_fraction=0.0)
    assert (n, report.unpaired) == (2, {"thumb": 1, "retry": 1})
    dataset = load_dataset("json", data_files=str(out), split="train")
    rows = [(r["completion"][0]["content"], r["label"], r["weight"], r["source"]) for r in dataset]
    assert rows == [("eight", False, 1.0, "thumb"), ("seven", False, 0.5, "retry")]
    assert dataset[0]["prompt"] == [{"role": "user", "content": "3+3?"}]
    assert (dataset[0]["version"], dataset[0]["user_id"], dataset[0]["split"]) == (
        "base",
        1,
        "train",
    )


def test_raw_dumps_every_table(judged, tmp_path):
    out = tmp_path / "raw.jsonl"
    n, report = export(judged, "raw", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report is None
    assert n == len(rows) == sum(judged.count(t) for t in judged.data_tables())
    by_table = {}
    for row in rows:
        by_table.setdefault(row["table"], []).append(row)
    assert [r["content"] for r in by_table["messages"]] == [
        "2+2?",
        "four",
        "five",
        "3+3?",
        "six",
        "seven",
        "eight",
    ]
    assert [(r["kind"], r["value"]) for r in by_table["feedback"]] == [
        ("thumb", 1),
        ("thumb", -1),
        ("thumb", -1),
        ("retry", None),
    ]
    assert by_table["battles"][0]["outcome"] == "b"


def test_export_writes_every_judgment_unless_asked_for_the_training_view(store, tmp_path):
    store.add_version("policy", "v2")
    users = [store.create_user() for _ in range(6)]
    for i, user in enumerate(users):
        for j in range(10 if i == 0 else 1):
            conversation = store.create_conversation(user.id)
            question = store.add_message(conversation.id, "user", f"q{i}.{j}")
            a, b = (
                store.add_message(conversation.id, "assistant", t, parent_id=question.id, version=v)
                for t, v in ((f"good {j}", "base"), (f"bad {j}", "v2"))
            )
            battle = store.create_battle(user.id, question.id, a.id, b.id, pairing="x")
            store.vote_battle(battle.id, user.id, "a")
    store.set_user_flagged(users[5].id)
    out = tmp_path / "pairs.jsonl"
    n, report = export(store, "trl-pairs", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(rows) == 15  # every vote, the flagged user's too, each at weight 1
    assert {r["weight"] for r in rows} == {1.0}
    assert [r["user_flagged"] for r in rows].count(True) == 1
    assert report.filtered == {}
    n, report = export(store, "trl-pairs", out, as_trained=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == 14 and not any(r["user_flagged"] for r in rows)
    assert report.filtered == {"flagged_user": 1}
    heavy = sum(r["weight"] for r in rows if r["user_id"] == 1)
    assert heavy / sum(r["weight"] for r in rows) == pytest.approx(0.2)  # 10 of 14 votes


def test_export_refuses_unknown_formats(store, tmp_path):
    assert FORMATS == ("trl-pairs", "kto", "raw")
    with pytest.raises(ValueError, match="export format must be one of trl-pairs, kto, raw"):
        export(store, "csv", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_trl_reward_trainer_accepts_the_pairs_file(judged, tmp_path, tiny_model_dir, tokenizer):
    from datasets import load_dataset
    from peft import LoraConfig, TaskType
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    out = tmp_path / "pairs.jsonl"
    export(judged, "trl-pairs", out, heldout_fraction=0.0)
    dataset = load_dataset("json", data_files=str(out), split="train")
    args = TRLRewardConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=2,
        per_device_train_batch_size=2,
        activation_checkpointing=False,
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type=TaskType.SEQ_CLS, r=4, modules_to_save=["score"]),
    )
    result = trainer.train()
    assert result.global_step == 2


def test_cli_export(judged, tmp_path, capsys):
    from app.cli import main

    data_dir = judged.path.parent
    out = tmp_path / "out" / "pairs.jsonl"
    assert (
        main(["export", "--data-dir", str(data_dir), "--format", "trl-pairs", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {len(out.read_text().splitlines())} lines to {out}"
    assert printed[1].startswith("pairs: ")
    assert main(["export", "--data-dir", str(data_dir), "--format", "raw", "--out", str(out)]) == 0
    assert {json.loads(line)["table"] for line in out.read_text().splitlines()} >= {
        "users",
        "messages",
        "feedback",
        "battles",
    }
