"""Feedback → training examples (trainer/data.py): every kind of judgment, the quality
filters and the split. Ids are literal: each test starts from an empty database."""

from __future__ import annotations

from trainer.data import (
    RETRY_WEIGHT,
    LabeledAnswer,
    PreferencePair,
    build_dataset,
    cap_user_share,
    split_by_conversation,
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
    """No held-out split and no cap: what each judgment maps to, alone."""
    return build_dataset(store, **{"heldout_fraction": 0.0, "user_share_cap": 1.0, **kwargs})


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


def test_the_user_cap_holds_when_one_user_casts_most_votes(store):
    store.add_version("policy", "v2")
    users = [store.create_user() for _ in range(6)]
    for _ in range(10):
        _battle(store, users[0].id, "a")
    for user in users[1:]:
        _battle(store, user.id, "a")
    data = _everything(store, user_share_cap=0.2)
    assert sorted(p.user_id for p in data.train_pairs) == [1, 2, 3, 4, 5, 6]
    assert data.report.filtered == {"user_cap": 9}
    assert data.report.users["1"] == {"offered": 10, "kept": 1}
    assert data.report.users["2"] == {"offered": 1, "kept": 1}
    # deterministic: the same data always loses the same rows
    assert data.train_pairs == _everything(store, user_share_cap=0.2).train_pairs


def test_the_cap_keeps_as_much_as_the_share_allows():
    examples = [_example(user_id=1, n=i) for i in range(8)]
    examples += [_example(user_id=2, n=8), _example(user_id=3, n=9)]
    kept = cap_user_share(examples, 0.5)
    assert sorted(e.user_id for e in kept) == [1, 1, 2, 3]
    assert len(cap_user_share(examples, 1.0)) == 10
    # fewer than 1 / cap users: no set satisfies the cap
    assert cap_user_share(examples, 0.2) == []


def test_the_cap_drops_by_seeded_hash_not_by_order():
    examples = [_example(user_id=1, n=i) for i in range(20)]
    examples += [_example(user_id=u, n=20 + u) for u in range(2, 6)]
    kept = [[e.source_ids for e in cap_user_share(examples, 0.25, seed=s)] for s in range(4)]
    assert kept[0] == [(14,), (22,), (23,), (24,), (25,)]
    assert [len(k) for k in kept] == [5, 5, 5, 5]
    assert len({tuple(k) for k in kept}) > 1


# -- the split ---------------------------------------------------------------------------


def test_the_split_never_puts_one_conversation_on_both_sides(store):
    user = store.create_user()
    for i in range(40):
        conversation_id, _, (a, b, c) = _ask(store, user.id, f"q{i}", "good", "bad", "meh")
        store.set_thumb(a.id, user.id, 1)
        store.set_thumb(b.id, user.id, -1)
        store.set_thumb(c.id, user.id, -1)
        store.add_feedback(c.id, user.id, "retry")
    data = build_dataset(store, heldout_fraction=0.25, user_share_cap=1.0, seed=0)
    train = {e.conversation_id for e in data.train_pairs + data.train_unpaired}
    heldout = {e.conversation_id for e in data.heldout_pairs + data.heldout_unpaired}
    assert train.isdisjoint(heldout)
    assert len(train | heldout) == 40
    assert (data.report.train_pairs, data.report.heldout_pairs) == (30, 10)
    again = build_dataset(store, heldout_fraction=0.25, user_share_cap=1.0, seed=0)
    assert {e.conversation_id for e in again.heldout_pairs} == heldout
    other_seed = build_dataset(store, heldout_fraction=0.25, user_share_cap=1.0, seed=1)
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
