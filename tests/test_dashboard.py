"""The Dashboard's tables, read from the store: who the judgments come from."""

from dataclasses import asdict

from app.page.dashboard import USER_SHARE_COLUMNS, user_shares
from trainer.data import build_dataset


def _battle(store, user_id, outcome="a"):
    conversation = store.create_conversation(user_id)
    question = store.add_message(conversation.id, "user", "2+2?")
    a, b = (
        store.add_message(conversation.id, "assistant", text, parent_id=question.id, version=v)
        for text, v in (("four", "base"), ("five", "v2"))
    )
    battle = store.create_battle(user_id, question.id, a.id, b.id, pairing="live-vs-candidate")
    store.vote_battle(battle.id, user_id, outcome)


def test_one_user_casting_most_votes_shows_first_with_the_weighted_share(store):
    store.add_version("policy", "v2")
    heavy = store.named_user("password", "mallory")
    others = [store.create_user() for _ in range(5)]
    for _ in range(10):
        _battle(store, heavy.id)
    for user in others:
        _battle(store, user.id)
    assert "" == user_shares(store).iloc[0]["weight in last training"]  # before training

    report = build_dataset(store, heldout_fraction=0.0, max_user_share=0.2).report
    run = store.start_run("reward")
    store.finish_run(run.id, "succeeded", metrics={"data": asdict(report)})

    table = user_shares(store)
    assert USER_SHARE_COLUMNS == list(table.columns)
    assert {
        "user": f"#{heavy.id} mallory",
        "judgments": 10,
        "share": "67%",  # 10 of 15 votes
        "weight in last training": "0.125",  # 10 votes weigh 1.25: C = 0.2 (C + 5)
        "weighted share": "20%",  # within the 20% share, and nothing dropped
    } == table.iloc[0].to_dict()
    assert [1] * 5 == list(table["judgments"][1:])
    assert ["1"] * 5 == list(table["weight in last training"][1:])


def test_judgments_per_user_counts_votes_and_training_feedback_only(store):
    user = store.create_user()
    conversation = store.create_conversation(user.id)
    question = store.add_message(conversation.id, "user", "hi")
    answer = store.add_message(
        conversation.id, "assistant", "hello", parent_id=question.id, version="base"
    )
    store.add_feedback(answer.id, user.id, "thumb", value=1)
    store.add_version("policy", "v2")
    _battle(store, user.id)
    unvoted = store.create_user()
    (row,) = store.judgments_per_user()
    assert (user.id, 1, 1, 2) == (row.user_id, row.battle_votes, row.feedback, row.total)
    assert unvoted.id != row.user_id
