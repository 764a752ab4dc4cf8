import sqlite3
import threading

import pytest

from storage import AlreadyVoted, Forbidden, InvalidValue, NotFound, Store


def rows(store, sql, params=()):
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def chat(store):
    user = store.create_user()
    conv = store.create_conversation(user.id, "greeting")
    question = store.add_message(conv.id, "user", "hello")
    answer = store.add_message(
        conv.id, "assistant", "hi!", parent_id=question.id, version="base", sampling={"t": 0.7}
    )
    return user, conv, question, answer


def test_new_store_has_every_table_and_base_live(store):
    assert {
        "users",
        "conversations",
        "messages",
        "feedback",
        "battles",
        "model_versions",
        "training_runs",
        "run_metrics",
    } <= set(store.db.table_names())
    live = store.live_version()
    assert ("base", "policy", "live") == (live.name, live.kind, live.status)


def test_reopening_applies_no_migration_twice(tmp_path):
    first = Store(tmp_path / "chat.db")
    first.create_user()
    first.close()
    second = Store(tmp_path / "chat.db")
    assert 1 == second.count("users")
    assert ["base"] == [v.name for v in second.versions()]


def test_wal_and_foreign_keys(store):
    assert "wal" == store.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert 1 == store.db.execute("PRAGMA foreign_keys").fetchone()[0]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_message(999, "user", "orphan")


def test_answer_records_its_version(store, chat):
    _, _, _, answer = chat
    assert [(2, "hi!", 1)] == rows(
        store, "SELECT id, content, model_version_id FROM messages WHERE role = 'assistant'"
    )
    assert "base" == store.message_version_name(answer.id)
    assert {"t": 0.7} == answer.sampling


def test_answer_without_version_is_refused(store, chat):
    _, conv, _, _ = chat
    with pytest.raises(InvalidValue):
        store.add_message(conv.id, "assistant", "who wrote me?")


def test_one_thumb_per_answer_and_user(store, chat):
    user, _, _, answer = chat
    store.set_thumb(answer.id, user.id, 1)
    store.set_thumb(answer.id, user.id, -1)
    assert [("thumb", -1)] == rows(store, "SELECT kind, value FROM feedback")
    assert store.set_thumb(answer.id, user.id, None) is None
    assert [] == rows(store, "SELECT * FROM feedback")


def test_thumb_values_and_targets_are_checked(store, chat):
    user, _, question, answer = chat
    with pytest.raises(InvalidValue):
        store.set_thumb(answer.id, user.id, 2)
    with pytest.raises(InvalidValue):
        store.set_thumb(question.id, user.id, 1)  # feedback is on answers
    with pytest.raises(NotFound):
        store.set_thumb(12345, user.id, 1)
    assert 0 == store.count("feedback")


def test_correction_keeps_text(store, chat):
    user, _, _, answer = chat
    store.add_feedback(answer.id, user.id, "edit", text="Hello! How can I help?")
    assert [("edit", "Hello! How can I help?")] == rows(store, "SELECT kind, text FROM feedback")
    with pytest.raises(InvalidValue):
        store.add_feedback(answer.id, user.id, "edit", text="  ")


def test_ownership(store, chat):
    _, conv, _, answer = chat
    stranger = store.create_user()
    with pytest.raises(Forbidden):
        store.owned_conversation(conv.id, stranger.id)
    with pytest.raises(Forbidden):
        store.owned_message(answer.id, stranger.id)


def test_battle_takes_one_vote_from_its_owner(store, chat):
    user, conv, question, answer = chat
    other = store.add_message(conv.id, "assistant", "hey", parent_id=question.id, version="base")
    battle = store.create_battle(user.id, question.id, answer.id, other.id, pairing="live_samples")
    stranger = store.create_user()
    with pytest.raises(Forbidden):
        store.vote_battle(battle.id, stranger.id, "a")
    with pytest.raises(InvalidValue):
        store.vote_battle(battle.id, user.id, "c")
    assert "tie" == store.vote_battle(battle.id, user.id, "tie").outcome
    with pytest.raises(AlreadyVoted):
        store.vote_battle(battle.id, user.id, "a")
    assert [("tie",)] == rows(store, "SELECT outcome FROM battles")


def test_exactly_one_live_version(store, tmp_path):
    store.add_version("policy", "v1", path=str(tmp_path))
    store.promote("v1")
    assert [("base", "retired"), ("v1", "live")] == [(v.name, v.status) for v in store.versions()]
    with pytest.raises(sqlite3.IntegrityError):  # the database itself refuses a second live row
        store.db.execute("UPDATE model_versions SET status = 'live' WHERE name = 'base'")
    with pytest.raises(InvalidValue):
        store.add_version("policy", "v1")


def test_runs_and_metrics(store):
    run = store.start_run("ppo")
    store.log_metrics(run.id, 0, {"kl": 0.5, "reward": 1.0})
    store.log_metrics(run.id, 1, {"kl": 0.25})
    finished = store.finish_run(run.id, "succeeded", n_examples=3, metrics={"mean_reward": 1.0})
    assert ("succeeded", 3, {"mean_reward": 1.0}) == (
        finished.status,
        finished.n_examples,
        finished.metrics,
    )
    assert {"kl": [(0, 0.5), (1, 0.25)], "reward": [(0, 1.0)]} == store.run_metrics(run.id)


def test_concurrent_writers_lose_nothing(store, chat):
    _, conv, _, _ = chat

    def write(n):
        for i in range(25):
            store.add_message(conv.id, "user", f"{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 2 + 6 * 25 == store.count("messages")
    assert [("ok",)] == rows(store, "PRAGMA integrity_check")


def test_failed_write_changes_nothing(store, chat):
    user, _, _, answer = chat
    with pytest.raises(sqlite3.IntegrityError), store._write() as db:
        db.execute("DELETE FROM feedback")
        db.execute(
            "INSERT INTO feedback (message_id, user_id, kind, created_at) VALUES (1, 1, 'bogus', 'x')"
        )
    store.set_thumb(answer.id, user.id, 1)
    assert 1 == store.count("feedback")
