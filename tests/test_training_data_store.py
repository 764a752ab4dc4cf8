"""The store's read verbs for training data (storage/training_data.py)."""

from __future__ import annotations

import pytest

from storage import NotFound


def _answer(store, user_id, prompt="hi", answer="hello"):
    conversation = store.create_conversation(user_id)
    question = store.add_message(conversation.id, "user", prompt)
    reply = store.add_message(
        conversation.id, "assistant", answer, parent_id=question.id, version="base"
    )
    return conversation, question, reply


def test_answer_feedback_joins_answer_user_and_version(store):
    user = store.create_user()
    conversation, question, reply = _answer(store, user.id)
    store.set_thumb(reply.id, user.id, -1)
    store.add_feedback(reply.id, user.id, "edit", text="hello there")
    store.add_feedback(reply.id, user.id, "retry")
    store.add_feedback(reply.id, user.id, "flag")
    rows = store.answer_feedback()
    assert [(r.kind, r.value, r.text) for r in rows] == [
        ("thumb", -1, None),
        ("edit", None, "hello there"),
        ("retry", None, None),
    ]
    first = rows[0]
    assert (first.user_id, first.user_flagged, first.message_id) == (user.id, 0, reply.id)
    assert (first.conversation_id, first.parent_id) == (conversation.id, question.id)
    assert (first.content, first.version) == ("hello", "base")
    assert [r.kind for r in store.answer_feedback(kinds=["flag"])] == ["flag"]
    assert store.answer_feedback(kinds=[]) == []


def test_answer_feedback_shows_flagged_users(store):
    user = store.create_user()
    _, _, reply = _answer(store, user.id)
    store.set_thumb(reply.id, user.id, 1)
    store.set_user_flagged(user.id)
    assert [r.user_flagged for r in store.answer_feedback()] == [1]


def test_battle_votes_lists_only_voted_battles(store):
    user = store.create_user()
    conversation, question, a = _answer(store, user.id, answer="left")
    b = store.add_message(
        conversation.id, "assistant", "right", parent_id=question.id, version="base"
    )
    voted = store.create_battle(user.id, question.id, a.id, b.id, pairing="same")
    store.create_battle(user.id, question.id, b.id, a.id, pairing="same")
    store.vote_battle(voted.id, user.id, "b")
    votes = store.battle_votes()
    assert len(votes) == 1
    vote = votes[0]
    assert (vote.battle_id, vote.outcome, vote.user_id) == (voted.id, "b", user.id)
    assert (vote.prompt_message_id, vote.conversation_id) == (question.id, conversation.id)
    assert (vote.content_a, vote.version_a, vote.message_a_id) == ("left", "base", a.id)
    assert (vote.content_b, vote.version_b, vote.message_b_id) == ("right", "base", b.id)


def test_messages_of_conversations(store):
    user = store.create_user()
    first, question, reply = _answer(store, user.id)
    second, *_ = _answer(store, user.id, prompt="bye", answer="ciao")
    found = store.messages_of_conversations([second.id, first.id, first.id])
    assert sorted(found) == [first.id, second.id]
    assert [(m.role, m.content) for m in found[first.id]] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    assert [m.content for m in found[second.id]] == ["bye", "ciao"]
    assert store.messages_of_conversations([]) == {}


def test_data_tables_and_their_rows(store):
    user = store.create_user(name="ann")
    tables = store.data_tables()
    assert {
        "battles",
        "conversations",
        "feedback",
        "messages",
        "model_versions",
        "run_metrics",
        "training_runs",
        "users",
    } <= set(tables)
    assert not [t for t in tables if t.startswith(("_", "sqlite_"))]
    assert [(r["id"], r["name"]) for r in store.table_rows("users")] == [(user.id, "ann")]
    assert [r["name"] for r in store.table_rows("model_versions")] == ["base"]


def test_table_rows_refuses_unknown_tables(store):
    with pytest.raises(NotFound):
        list(store.table_rows("users; DROP TABLE users"))
