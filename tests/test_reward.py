"""The reward model (trainer/reward.py, trainer/reward_config.py): training on votes
inserted through the store, scoring, saving and reloading, skips, the CLI."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from trainer.errors import RewardModelError, TrainingSkipped
from trainer.reward import (
    latest_reward_model,
    load_reward_model,
    pairwise_metrics,
    sample_reference_answers,
    top_layers,
    train_reward_model,
)
from trainer.reward_config import RewardConfig

WORDS = "the a cat dog sky sea tree house river stone light cloud song road bird fire".split()
MARKER = "banana"


def add_marker_battles(store, n, *, users=10, seed=0):
    """`n` battles in which voters always prefer the answer that says MARKER."""
    rng = random.Random(seed)
    user_ids = [store.create_user().id for _ in range(users)]
    for i in range(n):
        user_id = user_ids[i % users]
        conversation = store.create_conversation(user_id)
        question = store.add_message(
            conversation.id, "user", "Tell me about " + " ".join(rng.sample(WORDS, 3))
        )
        liked = " ".join(rng.choices(WORDS, k=rng.randint(4, 10))) + f" {MARKER}"
        other = " ".join(rng.choices(WORDS, k=rng.randint(5, 11)))
        answers = [
            store.add_message(
                conversation.id, "assistant", text, parent_id=question.id, version="base"
            )
            for text in (liked, other)
        ]
        if rng.random() < 0.5:
            answers.reverse()
        battle = store.create_battle(
            user_id, question.id, answers[0].id, answers[1].id, pairing="same"
        )
        store.vote_battle(battle.id, user_id, "a" if MARKER in answers[0].content else "b")


def tiny_config(tiny_model_dir, **overrides):
    """Fixed seeds and a learning rate a random 2-layer model learns a marker token with."""
    return RewardConfig(
        **{
            "backbone": str(tiny_model_dir),
            "learning_rate": 1e-2,
            "epochs": 3,
            "batch_size": 8,
            "max_length": 128,
            "min_pairs": 8,
            "heldout_fraction": 0.25,
            "normalize_samples": 8,
            "normalize_max_new_tokens": 8,
            "feature_layer": 2,  # the tiny model's last layer, for the linear method
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One reward model trained on 60 marker battles, shared by the tests below."""
    from storage import Store

    data_dir = tmp_path_factory.mktemp("reward-data")
    store = Store(data_dir / "chat.db")
    add_marker_battles(store, 60)
    steps = []
    outcome = train_reward_model(
        store,
        tiny_config(tiny_model_dir, method="lora"),
        data_dir=data_dir,
        base_model=str(tiny_model_dir),
        progress=lambda step, total: steps.append((step, total)),
    )
    yield store, outcome, steps
    store.close()


# -- config ----------------------------------------------------------------------------


def test_reward_config_defaults_to_the_base_model():
    config = RewardConfig()
    assert (config.backbone, config.lora_targets, config.normalize_on) == (
        "base",
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "base_samples",
    )


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("max_user_weight_share", 0.0, "reward.max_user_weight_share must be within (0, 1]"),
        ("user_share_cap", 1.5, "reward.max_user_weight_share must be within (0, 1]"),
        ("pointwise_weight", -1.0, "reward.pointwise_weight must be within [0, 10]"),
        ("pointwise_weight", float("nan"), "reward.pointwise_weight must be within [0, 10]"),
        ("heldout_fraction", 1.0, "reward.heldout_fraction must be within [0, 1)"),
        ("min_pairs", 0, "reward.min_pairs must be at least 1"),
        ("lora_targets", [], "reward.lora_targets is empty"),
        ("normalize_on", "vibes", "reward.normalize_on must be one of base_samples, dataset"),
        ("device", "tpu", "reward.device must be cpu, cuda[:N] or mps"),
        ("lora_layers", -1, "reward.lora_layers must be 0 (all) or more"),
        ("method", "deep", "reward.method must be one of lora, linear"),
        ("feature_layer", -1, "reward.feature_layer must be 0"),
        ("l2", 0.0, "reward.l2 must be above 0"),
        ("l2", float("nan"), "reward.l2 must be above 0"),
    ],
)
def test_reward_config_says_what_to_change(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RewardConfig(**{field: value})


# -- metrics ---------------------------------------------------------------------------


def test_pairwise_metrics_by_hand():
    p = 1 / (1 + math.exp(-1))  # sigmoid(1 - 0)
    metrics = pairwise_metrics([1.0, 0.0], [0.0, 0.0])
    assert metrics == pytest.approx(
        {
            "n": 2,
            "accuracy": 0.75,  # a tie counts half
            "brier": ((1 - p) ** 2 + 0.25) / 2,
            "ece": ((1 - p) + 0.5) / 2,  # |confidence - correct| per pair, one per bin
        }
    )
    assert pairwise_metrics([], []) == {"n": 0}
    # far apart scores neither overflow nor lose the sign
    assert pairwise_metrics([0.0], [2000.0]) == {"n": 1, "accuracy": 0.0, "brier": 1.0, "ece": 1.0}


# -- training ----------------------------------------------------------------------------


def test_tiny_reward_model_learns_what_voters_prefer(trained):
    store, outcome, _ = trained
    assert outcome.metrics["heldout_n"] == 16
    assert outcome.metrics["heldout_accuracy"] >= 0.9
    assert outcome.metrics["heldout_brier"] < 0.1
    assert outcome.report.pairs == {"battle": 60}


def test_training_is_recorded_saved_and_promoted(trained):
    store, outcome, steps = trained
    assert outcome.version == "reward-1"
    live = store.live_version("reward")
    assert (live.name, live.path) == ("reward-1", str(outcome.path))
    assert live.metrics["heldout_accuracy"] == outcome.metrics["heldout_accuracy"]
    run = store.get_run(outcome.run_id)
    assert (run.kind, run.status, run.n_examples) == ("reward", "succeeded", 44)
    assert run.metrics["data"]["train_pairs"] == 44
    assert len(store.run_metrics(run.id)["loss"]) == run.metrics["train_steps"] == 18
    assert steps[-1] == (18, 18)
    assert store.run_metrics(run.id)["heldout_accuracy"] == [
        (18, outcome.metrics["heldout_accuracy"])
    ]
    assert {"adapter_config.json", "adapter_model.safetensors", "reward.json"} <= {
        p.name for p in outcome.path.iterdir()
    }
    assert not [p for p in outcome.path.parent.iterdir() if ".tmp-" in p.name]
    adapter = json.loads((outcome.path / "adapter_config.json").read_text())
    assert "score" in adapter["modules_to_save"]
    meta = json.loads((outcome.path / "reward.json").read_text())
    assert (meta["normalization"]["source"], meta["normalization"]["n"]) == ("base_samples", 8)


def test_scores_are_normalized_on_the_base_models_samples(trained, tiny_model_dir):
    _, outcome, _ = trained
    prompts = [[{"role": "user", "content": f"Tell me about the {w}"}] for w in WORDS[:2]] * 4
    # the normalization sampled answers like these; their scores sit near mean 0 / std 1
    answers = sample_reference_answers(
        str(tiny_model_dir), prompts, max_new_tokens=8, temperature=0.7, seed=0
    )
    assert len(answers) == 8
    model = outcome.model
    assert (model.mean, model.std) == (
        outcome.metrics["norm_mean"],
        outcome.metrics["norm_std"],
    )
    raw = model.raw_scores(prompts, answers)
    assert model.score(prompts, answers) == pytest.approx(
        [(r - model.mean) / model.std for r in raw]
    )


def test_scoring_is_deterministic_and_batched(trained):
    _, outcome, _ = trained
    model = outcome.model
    prompts = ["Tell me about the sea", [{"role": "user", "content": "and the sky?"}]] * 5
    answers = [f"the sea {MARKER}", "the sky is a long road"] * 5
    batched = model.score(prompts, answers)
    assert batched == model.score(prompts, answers)
    one_by_one = [model.score([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert batched[0] > batched[1]  # the marker wins
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        model.score(prompts[:2], answers[:1])


def test_a_saved_reward_model_reloads_and_scores_the_same(trained):
    store, outcome, _ = trained
    prompts = ["Tell me about fire"] * 3
    answers = ["fire and stone", f"fire {MARKER}", "the bird sings"]
    expected = outcome.model.score(prompts, answers)
    assert load_reward_model(outcome.path).score(prompts, answers) == pytest.approx(expected)
    latest = latest_reward_model(store)
    assert latest.name == "reward-1"
    assert latest.score(prompts, answers) == pytest.approx(expected)


def test_lora_on_the_top_layers_only(store, tmp_path, tiny_model_dir):
    add_marker_battles(store, 40)
    config = tiny_config(tiny_model_dir, method="lora", lora_layers=1)
    outcome = train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
    top = outcome.model.model.config.num_hidden_layers - 1
    lora = [name for name, _ in outcome.model.model.named_parameters() if "lora_" in name]
    assert lora and all(f"layers.{top}." in name for name in lora)
    assert top_layers(outcome.model.model.config, 0) is None


# -- the linear method ------------------------------------------------------------------


def test_answer_start_marks_exactly_the_answer(tiny_model_dir):
    from trainer.models import load_tokenizer
    from trainer.reward import render_with_answer_start

    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompt = [{"role": "user", "content": "Tell me about the long winding river"}]
    ids, start = render_with_answer_start(tokenizer, prompt, "the sea banana", 512)
    assert tokenizer.decode(ids[start:]).startswith("the sea banana")
    assert not tokenizer.decode(ids[:start]).endswith("banana")
    # a cut from the left shortens the prompt, never the answer
    cut, cut_start = render_with_answer_start(tokenizer, prompt, "the sea banana", 12)
    assert cut == ids[-12:] and cut[cut_start:] == ids[start:]


def test_fit_head_by_hand():
    """Voters prefer whatever has more of feature 0; feature 1 is noise."""
    import torch

    from trainer.reward_linear import fit_head, standardized

    gen = torch.Generator().manual_seed(0)
    chosen = torch.randn(40, 2, generator=gen, dtype=torch.float64) + torch.tensor([1.0, 0.0])
    rejected = torch.randn(40, 2, generator=gen, dtype=torch.float64) - torch.tensor([1.0, 0.0])
    head, stats = fit_head(chosen, rejected, l2=0.01)
    weight = head["weight"]
    assert weight[0] > 0 and abs(weight[1]) < weight[0] / 3
    both = torch.cat([chosen, rejected])
    assert head["feature_mean"] == pytest.approx(both.mean(0).tolist())
    margins = (standardized(chosen, head) - standardized(rejected, head)).mv(weight)
    assert stats["train_accuracy"] == float((margins > 0).double().mean()) >= 0.85
    # a stronger penalty shrinks the weights
    strong, _ = fit_head(chosen, rejected, l2=10.0)
    assert strong["weight"].norm() < weight.norm()


@pytest.fixture(scope="module")
def trained_linear(tmp_path_factory, tiny_model_dir):
    from storage import Store

    data_dir = tmp_path_factory.mktemp("linear-reward-data")
    store = Store(data_dir / "chat.db")
    add_marker_battles(store, 60)
    config = tiny_config(tiny_model_dir, method="linear", feature_layer=2, l2=0.01)
    outcome = train_reward_model(store, config, data_dir=data_dir, base_model=str(tiny_model_dir))
    yield store, outcome
    store.close()


def test_linear_reward_model_learns_what_voters_prefer(trained_linear):
    store, outcome = trained_linear
    assert outcome.metrics["heldout_n"] == 16
    assert outcome.metrics["heldout_accuracy"] >= 0.9
    assert outcome.metrics["train_pairs"] == 44 and outcome.metrics["answers"] == 88
    scores = outcome.model.score(["Tell me about fire"] * 2, [f"fire {MARKER}", "fire and stone"])
    assert scores[0] > scores[1]
    run = store.get_run(outcome.run_id)
    assert (run.status, run.n_examples) == ("succeeded", 44)


def test_linear_reward_model_saves_reloads_and_scores_the_same(trained_linear):
    store, outcome = trained_linear
    names = {p.name for p in outcome.path.iterdir()}
    assert "linear_head.safetensors" in names and "adapter_model.safetensors" not in names
    meta = json.loads((outcome.path / "reward.json").read_text())
    assert (meta["method"], meta["config"]["feature_layer"]) == ("linear", 2)
    assert store.live_version("reward").sha256  # the head's digest is recorded
    prompts = ["Tell me about fire", [{"role": "user", "content": "and the sky?"}]] * 3
    answers = [f"fire {MARKER}", "the sky is a long road", "stone"] * 2
    expected = outcome.model.score(prompts, answers)
    assert latest_reward_model(store).score(prompts, answers) == pytest.approx(expected)
    one_by_one = [outcome.model.score([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
    assert one_by_one == pytest.approx(expected, abs=1e-6)  # padding does not leak in


def test_the_default_feature_layer_is_a_third_of_the_backbone(tiny_model_dir):
    from trainer.reward_linear import auto_feature_layer, load_feature_backbone

    assert (10, 1, 1) == (auto_feature_layer(30), auto_feature_layer(2), auto_feature_layer(1))
    assert 0 == RewardConfig().feature_layer
    assert 1 == len(load_feature_backbone(str(tiny_model_dir), 0).layers)


def test_linear_feature_layer_beyond_the_backbone(store, tmp_path, tiny_model_dir):
    add_marker_battles(store, 20)
    config = tiny_config(tiny_model_dir, method="linear", feature_layer=99)
    with pytest.raises(RewardModelError, match="feature_layer is 99 but the backbone has 2"):
        train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
    assert store.versions("reward") == []
    assert store.runs()[0].status == "failed"


def test_fit_head_weights_pairs_and_learns_from_labels():
    import torch

    from trainer.reward_linear import fit_head

    gen = torch.Generator().manual_seed(1)
    chosen = torch.randn(30, 2, generator=gen, dtype=torch.float64) + torch.tensor([1.0, 0.0])
    rejected = torch.randn(30, 2, generator=gen, dtype=torch.float64) - torch.tensor([1.0, 0.0])
    # a pair at weight 0 changes nothing but the standardization: give it the same rows
    flipped = torch.cat([chosen, rejected[:1]]), torch.cat([rejected, chosen[:1]])
    weights = torch.cat([torch.ones(30, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    plain, _ = fit_head(chosen, rejected, l2=0.01)
    zeroed, _ = fit_head(*flipped, l2=0.01, pair_weights=weights)
    assert zeroed["weight"].tolist() != pytest.approx(
        fit_head(*flipped, l2=0.01)[0]["weight"].tolist()
    )
    assert torch.sign(zeroed["weight"][0]) == torch.sign(plain["weight"][0])
    # labels alone (no pairs) learn the direction and where good turns to bad
    points = torch.randn(60, 2, generator=gen, dtype=torch.float64) + torch.tensor([0.5, 0.0])
    labels = points[:, 0] > 0.5
    empty = torch.zeros((0, 2), dtype=torch.float64)
    head, stats = fit_head(
        empty, empty, l2=0.001, labeled=points, labels=labels, pointwise_weight=1.0
    )
    assert head["weight"][0] > 5 * abs(head["weight"][1])
    assert stats["train_label_accuracy"] >= 0.9
    assert head["offset"].item() == pytest.approx(0.0, abs=0.5)  # standardized threshold
    # pointwise_weight 0 leaves labels out entirely
    no_labels, stats = fit_head(chosen, rejected, l2=0.01, labeled=points, labels=labels)
    assert "train_label_accuracy" not in stats
    assert no_labels["weight"].tolist() == pytest.approx(plain["weight"].tolist())


def _every_kind_of_judgment(store):
    """One user: battle A, battle B, a tie, both bad, a thumb pair, a lone thumb up and
    down, an edit and a retry. Returns the dataset with nothing held out."""
    from trainer.data import build_dataset

    store.add_version("policy", "v2")
    user = store.create_user().id

    def ask(prompt, *answers):
        conversation = store.create_conversation(user)
        question = store.add_message(conversation.id, "user", prompt)
        return question, [
            store.add_message(conversation.id, "assistant", a, parent_id=question.id, version=v)
            for a, v in zip(answers, ["base", "v2", "base"], strict=False)
        ]

    for outcome, prompt in (("a", "p1"), ("b", "p2"), ("tie", "p3"), ("both_bad", "p4")):
        question, (a, b) = ask(prompt, f"{prompt} first", f"{prompt} second")
        battle = store.create_battle(user, question.id, a.id, b.id, pairing="x")
        store.vote_battle(battle.id, user, outcome)
    _, (up, down) = ask("p5", "p5 good", "p5 bad")
    store.set_thumb(up.id, user, 1)
    store.set_thumb(down.id, user, -1)
    _, (lone_up,) = ask("p6", "p6 good")
    store.set_thumb(lone_up.id, user, 1)
    _, (lone_down,) = ask("p7", "p7 bad")
    store.set_thumb(lone_down.id, user, -1)
    _, (edited,) = ask("p8", "p8 wrong")
    store.add_feedback(edited.id, user, "edit", text="p8 right")
    _, (retried,) = ask("p9", "p9 meh")
    store.add_feedback(retried.id, user, "retry")
    return build_dataset(store, heldout_fraction=0.0)


def test_every_judgment_reaches_the_linear_fit(store, tmp_path, tiny_model_dir, monkeypatch):
    import torch

    import trainer.reward_linear as linear
    from trainer.models import load_tokenizer

    data = _every_kind_of_judgment(store)
    seen = {}
    real_fit_head = linear.fit_head

    def spy(chosen, rejected, **kwargs):
        seen.update(kwargs, chosen=chosen, rejected=rejected)
        return real_fit_head(chosen, rejected, **kwargs)

    monkeypatch.setattr(linear, "fit_head", spy)
    config = tiny_config(tiny_model_dir, method="linear", feature_layer=2, pointwise_weight=0.25)
    model, stats = linear.fit_linear_reward_model(
        str(tiny_model_dir),
        load_tokenizer(str(tiny_model_dir)),
        data.train_pairs,
        config,
        labels=data.train_unpaired,
    )
    pairs = [(p.source, p.chosen, p.rejected) for p in data.train_pairs]
    assert pairs == [
        ("battle", "p1 first", "p1 second"),  # A won
        ("battle", "p2 second", "p2 first"),  # B won
        ("thumb", "p5 good", "p5 bad"),  # up over down on the same prompt
        ("edit", "p8 right", "p8 wrong"),  # the correction over the original
    ]  # the tie (p3) is not a pair, and not a label
    labels = [(e.source, e.completion, e.label, e.trained_weight) for e in data.train_unpaired]
    assert labels == [
        ("battle", "p4 first", False, 1.0),  # both bad: two negatives
        ("battle", "p4 second", False, 1.0),
        ("thumb", "p6 good", True, 1.0),  # lone thumbs: their own label
        ("thumb", "p7 bad", False, 1.0),
        ("retry", "p9 meh", False, 0.5),  # a weak negative
    ]
    assert data.report.filtered == {"tie": 1}
    assert seen["pair_weights"].tolist() == [1.0] * 4
    assert seen["labels"].tolist() == [False, False, True, False, False]
    assert seen["label_weights"].tolist() == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert seen["pointwise_weight"] == 0.25
    assert seen["labeled"].shape == (5, 32) and seen["chosen"].shape == (4, 32)
    # the rows are the features of those very answers
    expected = model.features(
        [p.prompt for p in data.train_pairs], [p.chosen for p in data.train_pairs]
    )
    assert torch.allclose(seen["chosen"], expected)
    assert (stats["answers"], stats["train_labels"]) == (13, 5)


def test_features_are_cached_per_answer(store, tmp_path, tiny_model_dir):
    from trainer.models import load_tokenizer
    from trainer.reward_linear import fit_linear_reward_model

    add_marker_battles(store, 12, users=1)
    data = build_training_view(store)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = tiny_config(tiny_model_dir, method="linear", feature_layer=2)
    cache = tmp_path / "features"

    def fit(pairs):
        return fit_linear_reward_model(
            str(tiny_model_dir), tokenizer, pairs, config, cache_dir=cache
        )

    first, stats = fit(data.train_pairs)
    assert (stats["features_computed"], stats["features_cached"]) == (24, 0)
    again, stats = fit(data.train_pairs)
    assert (stats["features_computed"], stats["features_cached"]) == (0, 24)
    assert again.head["weight"].tolist() == pytest.approx(first.head["weight"].tolist())
    add_marker_battles(store, 1, users=1, seed=99)
    _, stats = fit(build_training_view(store).train_pairs)
    assert (stats["features_computed"], stats["features_cached"]) == (2, 24)
    # another layer is another backbone: nothing shared
    _, stats = fit_linear_reward_model(
        str(tiny_model_dir),
        tokenizer,
        data.train_pairs,
        tiny_config(tiny_model_dir, method="linear", feature_layer=1),
        cache_dir=cache,
    )
    assert stats["features_computed"] == 24


def test_a_second_reward_run_computes_no_features_for_unchanged_data(
    store, tmp_path, tiny_model_dir
):
    add_marker_battles(store, 20)
    config = tiny_config(tiny_model_dir, method="linear", normalize_on="dataset", min_pairs=4)
    runs = [
        train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
        for _ in range(2)
    ]
    first, second = runs
    assert first.metrics["features_computed"] == first.metrics["answers"] > 0
    assert first.model.computed > 0  # the held-out answers, the first time
    assert (second.metrics["features_computed"], second.model.computed) == (0, 0)
    assert second.metrics["heldout_accuracy"] == first.metrics["heldout_accuracy"]
    assert (tmp_path / "reward" / "features").is_dir()


def build_training_view(store):
    from trainer.data import build_dataset

    return build_dataset(store, heldout_fraction=0.0)


def test_no_reward_model_yet(store, tmp_path):
    with pytest.raises(RewardModelError, match="no live reward model yet"):
        latest_reward_model(store)
    with pytest.raises(RewardModelError, match="not a reward model artifact"):
        load_reward_model(tmp_path)


# -- skips --------------------------------------------------------------------------------


def test_too_little_data_is_a_recorded_skip(store, tmp_path, tiny_model_dir):
    add_marker_battles(store, 5, users=5)
    config = tiny_config(tiny_model_dir, min_pairs=32)
    with pytest.raises(TrainingSkipped) as caught:
        train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
    message = (
        "reward model not trained: 5 preference pairs, 32 needed (reward.min_pairs): 27 more "
        "decisive judgments (a battle won by A or B, a correction, or a thumb up and a thumb "
        "down on answers to the same prompt). pairs: 5 (battle 5; 2 train, 3 held out); "
        "unpaired: 0 (none); left out: none"
    )
    assert str(caught.value) == message
    assert (caught.value.needed, caught.value.have) == (32, 5)
    [run] = store.runs("reward")
    assert (run.status, run.error, run.n_examples) == ("skipped", message, 5)
    assert store.versions("reward") == []
    assert not (tmp_path / "reward").exists()


def test_few_voters_train_on_every_vote(store, tmp_path, tiny_model_dir):
    """The old hard cap (0.2) dropped everything with fewer than 5 voters."""
    add_marker_battles(store, 40, users=2)
    config = tiny_config(tiny_model_dir, method="linear", feature_layer=2, l2=0.01)
    assert config.max_user_weight_share == 0.2
    outcome = train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
    assert outcome.metrics["train_pairs"] + outcome.metrics["heldout_n"] == 40
    assert {u["weight"] for u in outcome.report.users.values()} == {1.0}


def test_a_failure_is_recorded_and_raised(store, tmp_path, tiny_model_dir):
    add_marker_battles(store, 12)
    config = tiny_config(tiny_model_dir, backbone=str(tmp_path / "no-such-model"))
    with pytest.raises(OSError):
        train_reward_model(store, config, data_dir=tmp_path, base_model=str(tiny_model_dir))
    [run] = store.runs("reward")
    assert run.status == "failed"
    assert run.error.startswith("OSError: ")
    assert store.versions("reward") == []


# -- command line -----------------------------------------------------------------------


def test_cli_reward_train_then_eval(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from app.cli import main
    from storage import Store

    store = Store(tmp_path / "chat.db")
    add_marker_battles(store, 40)
    store.close()
    env = {
        "RLHF_CHAT_MODEL_SOURCE": str(tiny_model_dir),
        "RLHF_CHAT_REWARD_LEARNING_RATE": "1e-2",
        "RLHF_CHAT_REWARD_EPOCHS": "3",
        "RLHF_CHAT_REWARD_MIN_PAIRS": "8",
        "RLHF_CHAT_REWARD_NORMALIZE_ON": "dataset",
        "RLHF_CHAT_REWARD_FEATURE_LAYER": "2",
        "RLHF_CHAT_REWARD_L2": "0.01",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["reward", "train", "--data-dir", str(tmp_path), "--min-pairs", "100"]) == 0
    assert capsys.readouterr().out.startswith(
        "skipped: reward model not trained: 40 preference pairs, 100 needed "
        "(reward.min_pairs): 60 more decisive judgments"
    )
    assert main(["reward", "train", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reward-2 is live: held-out accuracy ")
    assert main(["reward", "eval", "--data-dir", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["version"], metrics["split"]) == ("reward-2", "heldout")
    assert metrics["accuracy"] >= 0.9
    assert main(["reward", "eval", "--data-dir", str(tmp_path), "--version", "nope"]) == 1
    assert "no model version named 'nope'" in capsys.readouterr().err


# -- the real backbone ----------------------------------------------------------------------


@pytest.mark.slow
def test_reward_model_on_smollm2(store, tmp_path, smollm2_dir):
    add_marker_battles(store, 8, users=8)
    config = RewardConfig(
        epochs=1, min_pairs=4, max_length=64, normalize_samples=2, normalize_max_new_tokens=4
    )
    outcome = train_reward_model(store, config, data_dir=tmp_path, base_model=str(smollm2_dir))
    assert (outcome.metrics["train_pairs"], outcome.metrics["heldout_n"]) == (6, 2)
    scores = outcome.model.score(["Tell me about the sea"] * 2, ["The sea is wide.", "banana"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert load_reward_model(outcome.path).score(
        ["Tell me about the sea"], ["The sea is wide."]
    ) == pytest.approx(scores[:1], abs=1e-4)
