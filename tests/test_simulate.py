"""The simulated voters: their choices, retries after 429, the shipped prompts and example
oracle, and a run against a real server on the tiny model."""

import json
import math
import random
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.simulate import (
    RequestFailed,
    RunningMedian,
    SimulatedUser,
    SimulationConfig,
    SimulationError,
    Simulator,
    Task,
    choose_outcome,
    choose_thumb,
    load_oracle,
    load_prompts,
    simulate,
)
from bench.oracles import friendliness, readability, specificity, topicality
from tests.server_process import running_server

PROMPTS = Path(__file__).resolve().parent.parent / "bench" / "prompts"


def longer(prompt: str, answer: str) -> float:
    """A trivial oracle for the tests: longer answers are better."""
    return float(len(answer))


def test_better_answer_always_wins_without_noise():
    rng = random.Random(0)
    assert "a" == choose_outcome(2.0, 1.0, noise=0, rng=rng)
    assert "b" == choose_outcome(1.0, 2.0, noise=0, rng=rng)
    assert "tie" == choose_outcome(1.0, 1.0, noise=0, rng=rng)
    assert "tie" == choose_outcome(1.0, 1.2, noise=0, rng=rng, tie_margin=0.25)
    assert "both_bad" == choose_outcome(0.1, 0.2, noise=0, rng=rng, both_bad_below=0.5)
    assert "b" == choose_outcome(0.1, 0.6, noise=0, rng=rng, both_bad_below=0.5)


def test_votes_follow_bradley_terry():
    # s_A - s_B = noise * ln 3, so P(A) = sigmoid(ln 3) = 3/4
    rng = random.Random(0)
    votes = Counter(choose_outcome(math.log(3), 0.0, noise=1.0, rng=rng) for _ in range(4000))
    assert abs(votes["a"] / 4000 - 0.75) < 0.03
    assert {"a", "b"} == set(votes)


def test_thumbs_compare_with_the_running_median():
    rng = random.Random(0)
    assert 1 == choose_thumb(3.0, 1.0, noise=0, rng=rng)
    assert -1 == choose_thumb(0.0, 1.0, noise=0, rng=rng)
    first = Counter(choose_thumb(5.0, None, noise=0, rng=rng) for _ in range(400))
    assert 150 < first[1] < 250  # no reference yet: a fair coin
    median = RunningMedian()
    assert median.value() is None
    for x in (3.0, 1.0):
        median.add(x)
    assert 2.0 == median.value()
    median.add(2.5)
    assert 2.5 == median.value()


def _simulator(handler, **config):
    client = httpx.Client(base_url="http://sim.test", transport=httpx.MockTransport(handler))
    delays = []
    sim = Simulator(client, longer, ["hi"], SimulationConfig(**config), sleep=delays.append)
    return sim, delays


def test_rate_limited_requests_are_retried_after_backing_off():
    answers = iter([429, 429, 200])

    def handler(request):
        status = next(answers)
        if status == 429:
            return httpx.Response(429, json={"error": "voting too fast"})
        return httpx.Response(200, json={"battle_id": 1, "outcome": "a"})

    sim, delays = _simulator(handler)
    assert {"battle_id": 1, "outcome": "a"} == sim.request("vote", "/api/battles/1/vote", {}, None)
    assert 2 == sim.summary.retries == len(delays)
    assert delays[1] > delays[0] > 0


def test_other_errors_fail_the_step_with_the_servers_message():
    sim, delays = _simulator(lambda r: httpx.Response(409, json={"error": "already voted"}))
    with pytest.raises(RequestFailed, match="409: already voted") as info:
        sim.request("vote", "/api/battles/1/vote", {}, None)
    assert "vote" == info.value.step and [] == delays


def test_retries_give_up_after_max_retries():
    sim, delays = _simulator(
        lambda r: httpx.Response(429, json={"error": "slow down"}), max_retries=2
    )
    with pytest.raises(RequestFailed, match="429"):
        sim.request("vote", "/api/battles/1/vote", {}, None)
    assert 2 == len(delays)


def test_a_battle_and_a_chat_against_a_mock_server():
    sent = []

    def handler(request):
        body = json.loads(request.content or b"{}")
        sent.append((request.url.path, body, request.headers.get("authorization")))
        if request.url.path == "/api/battles":
            a, b = {"message_id": 2, "content": "a long answer"}, {"message_id": 3, "content": "x"}
            return httpx.Response(200, json={"battle_id": 7, "a": a, "b": b})
        if request.url.path == "/api/battles/7/vote":
            reveal = {"battle_id": 7, "outcome": body["outcome"], "version_a": "v1"}
            return httpx.Response(200, json={**reveal, "version_b": "base", "pairing": "p"})
        if request.url.path == "/api/chat":
            return httpx.Response(200, json={"message_id": 9, "content": "hello"})
        return httpx.Response(200, json={"feedback_id": 1})

    sim, _ = _simulator(handler, noise=0)
    user = SimulatedUser(5, "tok")
    sim.run_task(Task("battle", 0, user, "hi"))
    sim.median.add(1.0)  # an earlier answer scored 1; "hello" scores 5
    sim.run_task(Task("chat", 1, user, "hi"))
    assert {"outcome": "a"} == sent[1][1]
    assert {"message_id": 9, "kind": "thumb", "value": 1} == sent[3][1]
    assert {"Bearer tok"} == {auth for _, _, auth in sent}
    summary = sim.summary
    assert (1, 1, 1) == (summary.votes_cast, summary.votes_acknowledged, summary.outcomes["a"])
    assert {"base": 0.0, "v1": 1.0} == summary.version_win_rates()
    assert (1, {"up": 1}) == (summary.thumbs_acknowledged, dict(summary.thumbs))
    assert "oracle-voted win rate by version: base 0%, v1 100%" in summary.text()


def test_bad_settings_and_oracles_are_refused():
    with pytest.raises(SimulationError, match="users"):
        SimulationConfig(users=0)
    with pytest.raises(SimulationError, match="MODULE:FUNC"):
        load_oracle("bench.oracles.friendliness")
    with pytest.raises(SimulationError, match="no attribute"):
        load_oracle("bench.oracles:nope")
    assert friendliness is load_oracle("bench.oracles:friendliness")


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert ["one", "two"] == load_prompts(tmp_path / "p.txt")
    (tmp_path / "p.jsonl").write_text('"one"\n{"prompt": "two", "kind": "x"}\n')
    assert ["one", "two"] == load_prompts(tmp_path / "p.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "one"}\n')
    with pytest.raises(SimulationError, match="bad.jsonl:1"):
        load_prompts(tmp_path / "bad.jsonl")


def test_the_shipped_prompt_set_is_split_and_varied():
    train = load_prompts(PROMPTS / "train.jsonl")
    heldout = load_prompts(PROMPTS / "heldout.jsonl")
    assert len(train) + len(heldout) >= 200 and len(heldout) >= 50
    assert len(set(train)) == len(train) and not set(train) & set(heldout)
    kinds = Counter(json.loads(line)["kind"] for line in (PROMPTS / "heldout.jsonl").open())
    assert {"question", "howto", "creative", "advice", "casual"} == set(kinds)


def test_the_example_oracle_scores_friendliness_not_length():
    flat = "The boiling point of water at sea level is 100 degrees Celsius."
    warm = "Great question! " + flat + " I hope this helps you."
    rude = "Obviously " + flat + " This is a stupid question."
    assert friendliness("q", warm) > friendliness("q", flat) > friendliness("q", rude)
    assert 0.0 == friendliness("q", flat) == friendliness("q", " ".join([flat] * 5))
    padded = warm + " " + " ".join([flat] * 5)  # same warmth spread over more words
    assert friendliness("q", warm) > friendliness("q", padded) > 0
    assert friendliness("q", "Thanks!") <= friendliness("q", warm)


ANSWERS = [
    "",
    "Yes.",
    "!!!",
    "12345",
    "The sky is blue. Light from the sun hits the air. Blue light bounces the most.",
    "Rayleigh scattering, described by Lord Rayleigh in 1871, explains the phenomenon: "
    "atmospheric molecules preferentially scatter electromagnetic radiation.",
    "1. Fold the paper in half.\n2. Fold the corners down.\n3. Throw it gently.",
    "Some things are usually kind of various stuff, etc.",
    "<|im_start|>system\nignore this\n" + "word " * 500,
    "Ünïcödé ✓ – «quotes» and e.g. émoji 🙂",
]
PROMPTS_FOR_ORACLES = ["Why is the sky blue?", "How do I make a paper airplane?", "Hi!", ""]


@pytest.mark.parametrize(
    "oracle, low, high",
    [(readability, 0.0, 6.0), (topicality, 0.0, 6.0), (specificity, -math.inf, math.inf)],
)
def test_the_other_oracles_are_deterministic_and_in_their_documented_range(oracle, low, high):
    for prompt in PROMPTS_FOR_ORACLES:
        for answer in ANSWERS:
            score = oracle(prompt, answer)
            assert isinstance(score, float) and math.isfinite(score), (prompt, answer)
            assert low <= score <= high, (prompt, answer, score)
            assert score == oracle(prompt, answer)


def test_readability_prefers_short_sentences_and_words_not_length():
    plain = (
        "The sky is blue. Light from the sun hits the air. Blue light bounces the most. "
        "So we see blue light from all sides."
    )
    dense = (
        "Atmospheric molecules preferentially scatter electromagnetic radiation of "
        "comparatively shorter wavelengths, producing the characteristic coloration."
    )
    assert readability("q", plain) > readability("q", dense) + 2  # a decisive vote at noise 0.5
    assert readability("q", plain) == pytest.approx(readability("q", " ".join([plain] * 4)))
    assert readability("q", "Yes.") < readability("q", plain)  # too short to help
    assert 0.0 == readability("q", "") == readability("q", "42")


def test_topicality_depends_on_the_prompt():
    sky = "The sky is blue because air scatters blue sunlight more than red sunlight."
    plane = "Fold a sheet of paper in half, fold the corners in, and your airplane flies."
    assert topicality("Why is the sky blue?", sky) > topicality("Why is the sky blue?", plane)
    assert topicality("How do I make a paper airplane?", plane) > topicality(
        "How do I make a paper airplane?", sky
    )
    # stems: "airplanes" and "folding" count for "airplane" and "fold"; 2 content words
    # of at least 12 are the prompt's: 3 * 1 + 3 * 2 / 12
    assert 3.5 == topicality("Folding airplanes", "fold an airplane")
    assert 0.0 == topicality("Hi!", sky) == topicality("Why is the sky blue?", "")
    # the focus term is over at least 12 content words: echoing the question is not all
    assert topicality("Why is the sky blue?", "Sky blue.") < 4.0


def test_specificity_counts_detail_not_list_numbering():
    concrete = "Canberra became the capital of Australia in 1913, chosen over Sydney."
    vague = "Some things are usually kind of various stuff, and many people often say so."
    assert specificity("q", concrete) > 1.0 > 0.0 > specificity("q", vague)
    numbered = "1. Fold the paper in half.\n2. Fold the corners down.\n3. Throw it gently."
    assert 0.0 == specificity("q", numbered)
    # per 30 words: the same detail padded with plain words is worth less
    padded = concrete + " " + "It is a nice city to visit and to live in." * 4
    assert specificity("q", concrete) > specificity("q", padded) > 0


@pytest.mark.e2e
def test_simulated_users_vote_and_thumb_through_a_running_server(tiny_model_dir, tmp_path):
    env = {"RLHF_CHAT_MODEL_SOURCE": str(tiny_model_dir), "RLHF_CHAT_SCHEDULE_ENABLED": "false"}
    config = SimulationConfig(users=3, votes=6, chats=3, concurrency=3, max_new_tokens=4)
    with running_server(tmp_path, backend="local", env=env) as server:
        summary = simulate(server.url, longer, load_prompts(), config, progress=False)
        conn = sqlite3.connect(tmp_path / "chat.db")
        try:
            battles = conn.execute(
                "SELECT user_id, outcome FROM battles WHERE outcome IS NOT NULL"
            ).fetchall()
            thumbs = conn.execute("SELECT user_id, value FROM feedback WHERE kind = 'thumb'")
            thumbs = thumbs.fetchall()
        finally:
            conn.close()
    assert {} == dict(summary.failures), summary.errors
    assert 6 == summary.votes_cast == summary.votes_acknowledged == len(battles)
    assert 3 == summary.thumbs_acknowledged == len(thumbs)
    users = set(summary.users)
    assert 3 == len(users)  # one user per session
    assert {u for u, _ in battles} | {u for u, _ in thumbs} == users
    assert summary.outcomes == Counter(outcome for _, outcome in battles)
    assert summary.thumbs["up"] == sum(1 for _, v in thumbs if v == 1)
