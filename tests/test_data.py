"""Feedback → training examples (trainer/data.py): every kind of judgment, the quality
filters and the split. Ids are literal: each test starts from an empty database."""

from __future__ import annotations

import pytest

from trainer.data import (
    RETRY_WEIGHT,
    LabeledAnswer,
    PreferencePair,
    build_dataset,
    split_by_conversation,
    user_weights,
    weighted_subsample,
)


def _ask(store, user_id, prompt, *answers, versions=None, conversation_id=None, parent_id=None):
    """A user message and its answers (siblings); returns (conversation id, question, answers)."""
    if conversation_id is None:
        conversation_id = store.create_conversation(user_id).id
    question = store.add_message(conversation_id, "user", prompt, parent_id=parent_id)
    versions = versions or ["base"] * len(answers)
    replies = [
        store.add_message(conversation_id, "assistant", a, parent_id=question.id, version=v)
        for a, v in zip(answers, versions, strict=True)
    ]
    return conversation_id, question, replies


def _battle(store, user_id, outcome, a="four", b="five", prompt="2+2?", versions=("base", "v2")):
    _, question, (ma, mb) = _ask(store, user_id, prompt, a, b, versions=list(versions))
    battle = store.create_battle(user_id, question.id, ma.id, mb.id, pairing="live-vs-candidate")
    store.vote_battle(battle.id, user_id, outcome)
    return battle


def _everything(store, **kwargs):
    """No held-out split: what each judgment maps to, alone."""
    return build_dataset(store, **{"heldout_fraction": 0.0, **kwargs})


USER_PROMPT = [{"role": "user", "content": "2+2?"}]


# -- each kind of feedback -------------------------------------------------------------


def test_battle_a_is_a_pair(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _battle(store, user.id, "a")
    data = _everything(store)
    assert data.train_pairs == [
        PreferencePair(
            prompt=USER_PROMPT,
            chosen="four",
            rejected="five",
            source="battle",
            user_id=1,
            conversation_id=1,
            chosen_version="base",
            rejected_version="v2",
            source_ids=(1,),
            message_ids=(2, 3),
        )
    ]
    assert data.train_unpaired == []


def test_battle_b_is_a_pair_the_other_way(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _battle(store, user.id, "b")
    [pair] = _everything(store).train_pairs
    assert (pair.chosen, pair.rejected) == ("five", "four")
    assert (pair.chosen_version, pair.rejected_version) == ("v2", "base")
    assert pair.message_ids == (3, 2)


def test_battle_tie_is_dropped(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _battle(store, user.id, "tie")
    data = _everything(store)
    assert (data.train_pairs, data.train_unpaired) == ([], [])
    assert data.report.filtered == {"tie": 1}


def test_battle_both_bad_is_two_negatives_never_a_pair(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _battle(store, user.id, "both_bad")
    data = _everything(store)
    assert data.train_pairs == []
    assert data.train_unpaired == [
        LabeledAnswer(
            prompt=USER_PROMPT,
            completion="four",
            label=False,
            weight=1.0,
            source="battle",
            user_id=1,
            conversation_id=1,
            version="base",
            source_ids=(1,),
            message_ids=(2,),
        ),
        LabeledAnswer(
            prompt=USER_PROMPT,
            completion="five",
            label=False,
            weight=1.0,
            source="battle",
            user_id=1,
            conversation_id=1,
            version="v2",
            source_ids=(1,),
            message_ids=(3,),
        ),
    ]


def test_battle_between_identical_answers_teaches_nothing(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _battle(store, user.id, "a", a="same", b="same")
    data = _everything(store)
    assert data.train_pairs == []
    assert data.report.filtered == {"identical_answers": 1}


def test_thumbs_up_and_down_on_siblings_make_a_pair(store):
    user = store.create_user()
    _, _, (first, second) = _ask(store, user.id, "2+2?", "five", "four")
    store.set_thumb(first.id, user.id, -1)
    store.set_thumb(second.id, user.id, 1)
    data = _everything(store)
    assert data.train_pairs == [
        PreferencePair(
            prompt=USER_PROMPT,
            chosen="four",
            rejected="five",
            source="thumb",
            user_id=1,
            conversation_id=1,
            chosen_version="base",
            rejected_version="base",
            source_ids=(2, 1),
            message_ids=(3, 2),
        )
    ]
    assert data.train_unpaired == []


def test_thumbs_left_over_are_unpaired_with_their_label(store):
    user = store.create_user()
    _, _, (a, b, c) = _ask(store, user.id, "2+2?", "four", "4", "five")
    _, _, (lonely,) = _ask(store, user.id, "3+3?", "six")
    for message, value in ((a, 1), (b, 1), (c, -1), (lonely, 1)):
        store.set_thumb(message.id, user.id, value)
    data = _everything(store)
    assert [(p.chosen, p.rejected) for p in data.train_pairs] == [("four", "five")]
    assert [(u.completion, u.label, u.source, u.weight) for u in data.train_unpaired] == [
        ("4", True, "thumb", 1.0),
        ("six", True, "thumb", 1.0),
    ]


def test_thumbs_of_different_people_are_not_paired(store):
    ann, bob = store.create_user(), store.create_user()
    _, _, (a, b) = _ask(store, ann.id, "2+2?", "four", "five")
    store.set_thumb(a.id, ann.id, 1)
    store.set_thumb(b.id, bob.id, -1)
    data = _everything(store)
    assert data.train_pairs == []
    assert [(u.completion, u.label, u.user_id) for u in data.train_unpaired] == [
        ("four", True, 1),
        ("five", False, 2),
    ]


def test_an_edit_is_a_pair_of_the_correction_over_the_original(store):
    user = store.create_user()
    _, _, (answer,) = _ask(store, user.id, "2+2?", "five")
    store.add_feedback(answer.id, user.id, "edit", text="four")
    assert _everything(store).train_pairs == [
        PreferencePair(
            prompt=USER_PROMPT,
            chosen="four",
            rejected="five",
            source="edit",
            user_id=1,
            conversation_id=1,
            chosen_version=None,
            rejected_version="base",
            source_ids=(1,),
            message_ids=(2,),
        )
    ]


def test_an_edit_that_changes_nothing_is_dropped(store):
    user = store.create_user()
    _, _, (answer,) = _ask(store, user.id, "2+2?", "four")
    store.add_feedback(answer.id, user.id, "edit", text=" four ")
    data = _everything(store)
    assert data.train_pairs == []
    assert data.report.filtered == {"identical_answers": 1}


def test_a_retry_is_a_weak_negative(store):
    user = store.create_user()
    _, _, (answer,) = _ask(store, user.id, "2+2?", "five")
    store.add_feedback(answer.id, user.id, "retry")
    assert _everything(store).train_unpaired == [
        LabeledAnswer(
            prompt=USER_PROMPT,
            completion="five",
            label=False,
            weight=RETRY_WEIGHT,
            source="retry",
            user_id=1,
            conversation_id=1,
            version="base",
            source_ids=(1,),
            message_ids=(2,),
        )
    ]
    assert RETRY_WEIGHT == 0.5


def test_flags_are_not_training_signal(store):
    user = store.create_user()
    _, _, (answer,) = _ask(store, user.id, "2+2?", "five")
    store.add_feedback(answer.id, user.id, "flag")
    data = _everything(store)
    assert (data.train_pairs, data.train_unpaired, data.report.filtered) == ([], [], {})


def test_the_prompt_is_the_conversation_up_to_the_answers_parent(store):
    user = store.create_user()
    conversation_id, _, (first_answer,) = _ask(store, user.id, "hi", "hello")
    _, _, (good, bad) = _ask(
        store,
        user.id,
        "2+2?",
        "four",
        "five",
        conversation_id=conversation_id,
        parent_id=first_answer.id,
    )
    store.set_thumb(good.id, user.id, 1)
    store.set_thumb(bad.id, user.id, -1)
    [pair] = _everything(store).train_pairs
    assert pair.prompt == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
    ]


# -- feedback that exists: thumbs only, battles only, both -------------------------------


def test_thumbs_only_battles_only_and_both(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    assert _everything(store).report.n_pairs == 0
    _, _, (a, b) = _ask(store, user.id, "2+2?", "four", "five")
    store.set_thumb(a.id, user.id, 1)
    store.set_thumb(b.id, user.id, -1)
    assert _everything(store).report.pairs == {"thumb": 1}
    _battle(store, user.id, "a")
    _battle(store, user.id, "both_bad")
    report = _everything(store).report
    assert (report.pairs, report.unpaired) == ({"thumb": 1, "battle": 1}, {"battle": 2})
    assert report.summary() == (
        "pairs: 2 (battle 1, thumb 1; 2 train, 0 held out); unpaired: 2 (battle 2); left out: none"
    )


# -- quality filters --------------------------------------------------------------------


def test_flagged_users_are_dropped(store):
    store.add_version("policy", "v2")
    good, troll = store.create_user(), store.create_user()
    _battle(store, good.id, "a")
    _battle(store, troll.id, "b")
    _, _, (answer,) = _ask(store, troll.id, "3+3?", "six")
    store.set_thumb(answer.id, troll.id, -1)
    store.set_user_flagged(troll.id)
    data = _everything(store)
    assert [p.user_id for p in data.train_pairs] == [1]
    assert data.train_unpaired == []
    assert data.report.filtered == {"flagged_user": 2}


def test_one_vote_per_user_and_item_the_latest_wins(store):
    user = store.create_user()
    _, _, (answer,) = _ask(store, user.id, "2+2?", "five")
    store.add_feedback(answer.id, user.id, "edit", text="4")
    store.add_feedback(answer.id, user.id, "edit", text="four")
    store.add_feedback(answer.id, user.id, "retry")
    store.add_feedback(answer.id, user.id, "retry")
    data = _everything(store)
    assert [(p.chosen, p.source_ids) for p in data.train_pairs] == [("four", (2,))]
    assert [(u.source, u.source_ids) for u in data.train_unpaired] == [("retry", (4,))]
    assert data.report.filtered == {"duplicate_vote": 2}


def test_two_battles_over_the_same_answers_count_once(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    _, question, (a, b) = _ask(store, user.id, "2+2?", "four", "five", versions=["base", "v2"])
    first = store.create_battle(user.id, question.id, a.id, b.id, pairing="x")
    second = store.create_battle(user.id, question.id, b.id, a.id, pairing="x")
    store.vote_battle(first.id, user.id, "a")
    store.vote_battle(second.id, user.id, "a")
    data = _everything(store)
    assert [(p.chosen, p.source_ids) for p in data.train_pairs] == [("five", (2,))]
    assert data.report.filtered == {"duplicate_vote": 1}


def test_one_user_alone_keeps_every_vote_at_full_weight(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    for i in range(40):
        _battle(store, user.id, "a" if i % 2 else "b", prompt=f"q{i}?")
    data = _everything(store)  # the default share, 0.2
    assert len(data.train_pairs) == 40
    assert {p.trained_weight for p in data.train_pairs} == {1.0}
    assert data.report.users == {"1": {"kept": 40, "weight": 1.0, "share": 1.0}}
    assert "left out: none" in data.report.summary()


def test_one_user_among_many_cannot_exceed_the_share(store):
    store.add_version("policy", "v2")
    users = [store.create_user() for _ in range(8)]
    for i in range(30):
        _battle(store, users[0].id, "a", prompt=f"heavy {i}?")
    for user in users[1:]:
        for i in range(2):
            _battle(store, user.id, "a", prompt=f"{user.id} {i}?")
    data = _everything(store, max_user_share=0.2)
    assert len(data.train_pairs) == 30 + 7 * 2  # nothing dropped
    heavy = data.report.users["1"]
    assert heavy["share"] == pytest.approx(0.2, abs=1e-6)
    assert heavy["weight"] == pytest.approx(3.5 / 30, abs=1e-6)  # C = 0.2 * (C + 14) -> C = 3.5
    assert {data.report.users[str(u.id)]["weight"] for u in users[1:]} == {1.0}
    total = sum(p.trained_weight for p in data.train_pairs)
    assert sum(p.trained_weight for p in data.train_pairs if p.user_id == 1) / total == (
        pytest.approx(0.2)
    )
    assert "1 of 8 users weighted down (largest share 20%)" in data.report.summary()


def test_user_weights():
    # one user alone: the share cannot bind
    assert user_weights({1: 40}, 0.2) == {1: 1.0}
    # shares nobody exceeds: every weight 1
    assert user_weights({u: 3 for u in range(10)}, 0.2) == {u: 1.0 for u in range(10)}
    # fewer users than 1 / share: totals made equal, the smallest user's total
    assert user_weights({1: 30, 2: 10, 3: 5}, 0.2) == pytest.approx({1: 1 / 6, 2: 0.5, 3: 1.0})
    # enough users: the heavy one is cut to exactly the share, the rest untouched
    counts = {1: 100, **{u: 4 for u in range(2, 12)}}
    weights = user_weights(counts, 0.25)
    totals = {u: weights[u] * n for u, n in counts.items()}
    assert totals[1] / sum(totals.values()) == pytest.approx(0.25)
    assert all(weights[u] == 1.0 for u in range(2, 12))
    # two heavy users both capped at the same total
    weights = user_weights({1: 50, 2: 40, **{u: 1 for u in range(3, 13)}}, 0.2)
    assert weights[1] * 50 == pytest.approx(weights[2] * 40)
    assert weights[1] * 50 / (weights[1] * 50 + weights[2] * 40 + 10) == pytest.approx(0.2)
    assert user_weights({}, 0.2) == {}


def test_retries_count_at_their_own_weight_in_a_users_total(store):
    ann, bob = store.create_user(), store.create_user()
    for i in range(4):
        _, _, (answer,) = _ask(store, ann.id, f"q{i}?", "five")
        store.add_feedback(answer.id, ann.id, "retry")
    _, _, (answer,) = _ask(store, bob.id, "q?", "six")
    store.set_thumb(answer.id, bob.id, 1)
    data = _everything(store, max_user_share=0.2)
    # ann's 4 retries weigh 4 x 0.5 = 2; equal totals with bob's 1 thumb: weight 1 / 2
    assert {u.user_id: u.user_weight for u in data.train_unpaired} == {1: 0.5, 2: 1.0}
    assert [u.trained_weight for u in data.train_unpaired] == [1.0] + [0.25] * 4


def test_weighted_subsample_keeps_the_weighted_count_by_seeded_hash():
    examples = [_example(user_id=1, n=i) for i in range(20)]
    examples += [_example(user_id=u, n=20 + u) for u in range(2, 6)]
    weights = user_weights({1: 20, 2: 1, 3: 1, 4: 1, 5: 1}, 0.25)
    weighted = [
        PreferencePair(**{**e.__dict__, "user_weight": weights[e.user_id]}) for e in examples
    ]
    kept = [[e.source_ids for e in weighted_subsample(weighted, seed=s)] for s in range(4)]
    # C = 0.25 * (C + 4) = 4/3: the heavy user keeps ceil(4/3) = 2 of 20, the others all
    assert [len(k) for k in kept] == [2 + 4] * 4
    assert len({tuple(k) for k in kept}) > 1
    assert weighted_subsample(examples) == examples  # weight 1: everything


def test_training_filters_off_keeps_every_judgment_as_made(store):
    store.add_version("policy", "v2")
    good, troll = store.create_user(), store.create_user()
    _battle(store, good.id, "a")
    _battle(store, troll.id, "b")
    store.set_user_flagged(troll.id)
    _, _, (answer,) = _ask(store, good.id, "3+3?", "six")
    store.add_feedback(answer.id, good.id, "retry")
    store.add_feedback(answer.id, good.id, "retry")
    data = build_dataset(store, heldout_fraction=0.0, training_filters=False)
    assert sorted(p.user_id for p in data.train_pairs) == [1, 2]
    assert [u.trained_weight for u in data.train_unpaired] == [RETRY_WEIGHT] * 2
    assert data.report.filtered == {}
    trained = build_dataset(store, heldout_fraction=0.0)
    assert [p.user_id for p in trained.train_pairs] == [1]
    assert trained.report.filtered == {"flagged_user": 1, "duplicate_vote": 1}


def test_thumbs_pair_across_conversations_on_the_same_prompt(store):
    ann, bob = store.create_user(), store.create_user()
    _, _, (good,) = _ask(store, ann.id, "2+2?", "four")
    _, _, (bad,) = _ask(store, ann.id, "2+2?", "five")  # a new conversation, same prompt
    _, _, (other,) = _ask(store, ann.id, "3+3?", "seven")
    _, _, (bobs,) = _ask(store, bob.id, "2+2?", "22")
    store.set_thumb(good.id, ann.id, 1)
    store.set_thumb(bad.id, ann.id, -1)
    store.set_thumb(other.id, ann.id, -1)
    store.set_thumb(bobs.id, bob.id, -1)
    data = _everything(store, max_user_share=1.0)
    assert [(p.chosen, p.rejected, p.source, p.conversation_id) for p in data.train_pairs] == [
        ("four", "five", "thumb", 1)
    ]
    assert [(u.completion, u.label) for u in data.train_unpaired] == [
        ("seven", False),
        ("22", False),
    ]


def test_new_signal_judgments_count_what_adds_training_signal(store):
    store.add_version("policy", "v2")
    user = store.create_user()
    for outcome in ("a", "b", "tie", "both_bad"):
        _battle(store, user.id, outcome)
    _, _, (answer,) = _ask(store, user.id, "3+3?", "six")
    store.set_thumb(answer.id, user.id, 1)
    store.add_feedback(answer.id, user.id, "edit", text="6")
    store.add_feedback(answer.id, user.id, "retry")
    store.add_feedback(answer.id, user.id, "flag")
    assert store.new_signal_judgments() == 6  # a, b, both bad, thumb, edit, retry
    troll = store.create_user()
    _battle(store, troll.id, "a")
    store.set_user_flagged(troll.id)
    assert store.new_signal_judgments() == 6
    run = store.start_run("cycle")
    store.finish_run(run.id, "succeeded")
    assert store.new_signal_judgments() == 0
    store.set_thumb(answer.id, user.id, -1)  # changed its mind: counts again
    assert store.new_signal_judgments() == 1


# -- the split ---------------------------------------------------------------------------


def test_the_split_never_puts_one_conversation_on_both_sides(store):
    user = store.create_user()
    for i in range(40):
        conversation_id, _, (a, b, c) = _ask(store, user.id, f"q{i}", "good", "bad", "meh")
        store.set_thumb(a.id, user.id, 1)
        store.set_thumb(b.id, user.id, -1)
        store.set_thumb(c.id, user.id, -1)
        store.add_feedback(c.id, user.id, "retry")
    data = build_dataset(store, heldout_fraction=0.25, seed=0)
    train = {e.conversation_id for e in data.train_pairs + data.train_unpaired}
    heldout = {e.conversation_id for e in data.heldout_pairs + data.heldout_unpaired}
    assert train.isdisjoint(heldout)
    assert len(train | heldout) == 40
    assert (data.report.train_pairs, data.report.heldout_pairs) == (30, 10)
    again = build_dataset(store, heldout_fraction=0.25, seed=0)
    assert {e.conversation_id for e in again.heldout_pairs} == heldout
    other_seed = build_dataset(store, heldout_fraction=0.25, seed=1)
    assert {e.conversation_id for e in other_seed.heldout_pairs} != heldout


def test_split_by_conversation_keeps_nothing_out_at_fraction_zero():
    examples = [_example(user_id=1, n=i) for i in range(5)]
    assert split_by_conversation(examples, 0.0) == (examples, [])


def _example(*, user_id, n):
    return PreferencePair(
        prompt=USER_PROMPT,
        chosen="four",
        rejected="five",
        source="battle",
        user_id=user_id,
        conversation_id=n,
        chosen_version="base",
        rejected_version="base",
        source_ids=(n,),
        message_ids=(2 * n, 2 * n + 1),
    )
