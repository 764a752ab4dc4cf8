"""The arena on the scripted backend: the pairing policy, battles stored as two answers
to one prompt, both answers started before either is read, and the one vote."""

import random
import threading

import pytest

from app.arena import ArenaService, Reveal, Side, choose_pairing, merge_replies
from app.chat import ChatService
from app.config import ArenaConfig, ServingConfig
from app.errors import InputError
from app.limits import SlidingWindow
from app.serving.backend import BackendError, Reply, SamplingParams
from app.serving.scripted import ScriptedBackend

PARAMS = SamplingParams(temperature=0.7, max_new_tokens=64)
HI = [{"role": "user", "content": "hi"}]


def by_version(messages, version):
    return f"{version} says {messages[-1]['content']}"


class RecordingBackend(ScriptedBackend):
    """Scripted answers; remembers every request it was asked to start."""

    def __init__(self, answer=by_version):
        super().__init__(answer)
        self.started = []

    def stream(self, messages, *, version=None, params=PARAMS):
        self.started.append((self.resolve(version), params.temperature))
        return super().stream(messages, version=version, params=params)


@pytest.fixture
def backend():
    return RecordingBackend()


@pytest.fixture
def arena(store, backend):
    chat = ChatService(store, backend, ServingConfig())
    return ArenaService(chat, ArenaConfig(), rng=random.Random(0))


@pytest.fixture
def user(store):
    return store.create_user().id


def pairing(**overrides):
    args = {
        "live": "base",
        "candidates": [],
        "previous": None,
        "loaded": {"base"},
        "params": PARAMS,
        "temperatures": (0.7, 1.0),
    }
    return choose_pairing(**{**args, **overrides})


def sides(p):
    return [(s.version, s.params.temperature) for s in p.sides]


# -- the policy, as a pure function ------------------------------------------------------


def test_newest_loaded_candidate_meets_live():
    p = pairing(live="v1", candidates=["v3", "v2"], previous="base", loaded={"base", "v1", "v2"})
    assert ("candidate_vs_live", [("v2", 0.7), ("v1", 0.7)]) == (p.kind, sides(p))


def test_live_meets_the_previous_live_version_when_no_candidate_is_loaded():
    p = pairing(live="v1", candidates=["v2"], previous="base", loaded={"base", "v1"})
    assert ("live_vs_previous", [("v1", 0.7), ("base", 0.7)]) == (p.kind, sides(p))


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the first day: only the base model
        {"live": "v2", "previous": "v1", "loaded": {"base", "v2"}},  # previous not loaded
        {"candidates": ["base"]},  # a "candidate" that is live is no opponent
    ],
)
def test_otherwise_two_samples_of_live_at_two_temperatures(overrides):
    p = pairing(**overrides)
    live = overrides.get("live", "base")
    assert ("live_two_samples", [(live, 0.7), (live, 1.0)]) == (p.kind, sides(p))
    assert [64, 64] == [s.params.max_new_tokens for s in p.sides]


def test_side_is_a_version_with_its_sampling():
    assert Side("v1", PARAMS) == pairing(candidates=["v1"], loaded={"base", "v1"}).sides[0]


# -- battles through the service ---------------------------------------------------------


def test_first_battle_is_two_samples_of_live_stored_as_two_answers(arena, store, user):
    turn, battle = arena.battle(user, HI)
    prompt = store.get_message(battle.prompt_message_id)
    a, b = store.get_message(battle.message_a_id), store.get_message(battle.message_b_id)
    assert ("user", "hi", None) == (prompt.role, prompt.content, prompt.parent_id)
    assert user == store.get_conversation(prompt.conversation_id).user_id
    assert [("assistant", prompt.id, prompt.conversation_id, "base says hi")] * 2 == [
        (m.role, m.parent_id, m.conversation_id, m.content) for m in (a, b)
    ]
    assert ["base", "base"] == [store.message_version_name(m.id) for m in (a, b)]
    assert [0.7, 0.7] == sorted(m.sampling["temperature"] for m in (a, b))
    assert ("live_two_samples", None, None) == (battle.pairing, battle.outcome, battle.voted_at)
    assert ["base says hi", "base says hi"] == [side.text for side in turn.sides]


def test_candidate_battle_when_the_backend_has_it_loaded(arena, store, backend, user):
    store.add_version("policy", "v1", path="/adapters/v1")
    store.add_version("policy", "v2", path="/adapters/v2")  # newer, but not loaded
    backend.load("v1", "/adapters/v1")
    _, battle = arena.battle(user, HI)
    contents = {store.get_message(i).content for i in (battle.message_a_id, battle.message_b_id)}
    assert ("candidate_vs_live", {"v1 says hi", "base says hi"}) == (battle.pairing, contents)
    assert {("v1", 0.7), ("base", 0.7)} == set(backend.started)


def test_live_against_previous_after_a_promotion(arena, store, backend, user):
    store.add_version("policy", "v1", path="/adapters/v1")
    store.promote("v1")
    backend.load("v1", "/adapters/v1")
    backend.set_live("v1")
    _, battle = arena.battle(user, HI)
    assert "live_vs_previous" == battle.pairing
    versions = {store.get_version_by_id(i).name for i in (battle.version_a_id, battle.version_b_id)}
    assert {"v1", "base"} == versions


def test_positions_are_shuffled(arena, store, backend, user):
    store.add_version("policy", "v1", path="/adapters/v1")
    backend.load("v1", "/adapters/v1")
    firsts = {
        store.get_version_by_id(arena.battle(user, HI)[1].version_a_id).name for _ in range(8)
    }
    assert {"v1", "base"} == firsts


def test_both_answers_start_before_either_is_read(arena, backend, user):
    turn = arena.start(user, HI)
    assert 2 == len(backend.started)
    assert ["", ""] == [side.text for side in turn.sides]


@pytest.mark.timeout(30)
def test_answers_are_read_concurrently():
    slow, fast = Reply("base"), Reply("base")
    fast._push("fast")
    fast._finish("stop", 1)
    events = merge_replies([slow, fast])
    assert (1, "fast") == next(events)  # read while the first answer has not started yet
    threading.Thread(target=lambda: (slow._push("slow"), slow._finish("stop", 1))).start()
    assert [(0, "slow")] == list(events)


def test_a_failing_side_stores_no_battle(store, user):
    def fail_v1(messages, version):
        if version == "v1":
            raise RuntimeError("out of memory")
        return "fine"

    backend = RecordingBackend(fail_v1)
    backend.load("v1", "/adapters/v1")
    store.add_version("policy", "v1", path="/adapters/v1")
    arena = ArenaService(ChatService(store, backend, ServingConfig()), ArenaConfig())
    with pytest.raises(BackendError):
        arena.battle(user, HI)
    assert (0, 1) == (store.count("battles"), store.count("messages"))


@pytest.mark.parametrize(
    ("messages", "status"),
    [([], 400), ([{"role": "user", "content": "x" * 4001}], 413), ("hi", 400)],
)
def test_bad_prompts_store_nothing(arena, store, backend, user, messages, status):
    with pytest.raises(InputError) as info:
        arena.start(user, messages)
    assert (status, 0, []) == (info.value.status, store.count("messages"), backend.started)


# -- votes -------------------------------------------------------------------------------


def test_vote_reveals_the_versions_once(arena, store, user):
    _, battle = arena.battle(user, HI)
    reveal = arena.vote(user, battle.id, "b")
    assert Reveal(battle.id, "b", "base", "base", "live_two_samples") == reveal
    voted = store.get_battle(battle.id)
    with pytest.raises(InputError) as info:
        arena.vote(user, battle.id, "a")
    assert (409, voted) == (info.value.status, store.get_battle(battle.id))
    assert ("b", True) == (voted.outcome, voted.voted_at is not None)


@pytest.mark.parametrize(
    ("who", "battle_id", "outcome", "status"),
    [
        ("other", None, "a", 403),
        ("owner", 999, "a", 404),
        ("owner", None, "c", 400),
        ("owner", None, None, 400),
        ("owner", "1", "a", 400),
        ("owner", True, "a", 400),
    ],
)
def test_refused_votes_change_nothing(arena, store, user, who, battle_id, outcome, status):
    _, battle = arena.battle(user, HI)
    voter = user if who == "owner" else store.create_user().id
    with pytest.raises(InputError) as info:
        arena.vote(voter, battle.id if battle_id is None else battle_id, outcome)
    assert (status, battle) == (info.value.status, store.get_battle(battle.id))


def test_vote_limiter_is_a_sliding_window():
    now = [100.0]
    limiter = SlidingWindow(2, 10.0, clock=lambda: now[0])
    assert [True, True, False, True] == [
        limiter.hit(1),
        limiter.hit(1),
        limiter.hit(1),
        limiter.hit(2),
    ]
    now[0] = 110.0
    assert [True, True, False] == [limiter.hit(1), limiter.hit(1), limiter.hit(1)]


def test_voting_too_fast_is_429_and_leaves_the_battle_unvoted(store, backend, user):
    chat = ChatService(store, backend, ServingConfig())
    arena = ArenaService(chat, ArenaConfig(votes_per_window=1, vote_window_s=3600))
    (_, first), (_, second) = arena.battle(user, HI), arena.battle(user, HI)
    arena.vote(user, first.id, "tie")
    with pytest.raises(InputError) as info:
        arena.vote(user, second.id, "tie")
    assert (429, None) == (info.value.status, store.get_battle(second.id).outcome)


# -- the page's handlers, called as Gradio would -----------------------------------------


def test_page_battle_streams_both_sides_then_one_vote_locks_the_buttons(arena, store):
    from app.identity import Identity
    from app.page import arena as arena_ui
    from app.page import session

    identity = Identity("test-secret")
    token = session.sign_in(identity, store)(None)
    updates = list(arena_ui.start_battle(arena, identity)("hi", token))
    _, chat_a, chat_b, battle_id, reveal, *buttons = updates[-1]
    answer = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "base says hi"}]
    assert (answer, answer, arena_ui.ASK_FOR_VOTE) == (chat_a, chat_b, reveal)
    assert [True] * 4 == [b["interactive"] for b in buttons]
    assert [False] * 4 == [b["interactive"] for b in updates[0][5:]]  # locked while streaming
    reveal, *buttons = arena_ui.cast_vote(arena, identity, "tie")(battle_id, token)
    assert "You voted **Tie**. A was `base`, B was `base`" == reveal.split(" (")[0]
    assert [False] * 4 == [b["interactive"] for b in buttons]
    with pytest.warns(UserWarning, match="already has a vote"):  # gr.Warning outside a page
        _, *buttons = arena_ui.cast_vote(arena, identity, "a")(battle_id, token)
    assert ("tie", [False] * 4) == (
        store.get_battle(battle_id).outcome,
        [b["interactive"] for b in buttons],
    )


def test_page_leaderboard_tables(arena, store, user):
    from app.page import leaderboard

    for _ in range(2):
        arena.vote(user, arena.battle(user, HI)[1].id, "a")
    table, matrix, chart = leaderboard.show_leaderboard(store)()
    assert [["base", "live", 1000.0, "1000 – 1000", 2, "—"]] == table.values.tolist()
    assert [["base", "—"]] == matrix.values.tolist()
    assert chart is not None
