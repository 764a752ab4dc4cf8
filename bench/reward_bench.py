"""Reward-model bench: held-out accuracy against the number of preference pairs, and
training time per pair, on the real SmolLM2 backbone.

A rule stands in for the voters. It dislikes stock phrases ("crucial", "vital",
"incredibly", "fascinating"…): an answer scores minus the number of those it uses, the
voter picks the higher score, and equal scores are ties (which the data builder drops).
The answers are base-model-like: sentences of real SmolLM2 answers (sampled at the
serving temperature for a set of prompts, cached under .cache/bench/) recombined into
new answers to the same prompt, because sampling fresh answers for every pair costs far
more CPU time than the bench has. Held-out prompts are disjoint from training prompts,
so no held-out sentence was seen in training.

For each size N: a fresh store, N battles voted by the rule through the store,
`train_reward_model` (the product's path: TRL RewardTrainer, LoRA, score head), then
accuracy and calibration on the same held-out pairs for every N.

    .venv/bin/python bench/reward_bench.py --threads 1 --sizes 100 300 1000 --out bench/results

Writes OUT/reward.json and OUT/reward.md (the table; notes are added by hand) after
every size, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STOCK_PHRASES = (
    "crucial",
    "vital",
    "essential",
    "incredibly",
    "fascinating",
    "complex",
    "unique",
    "plays a",
    "natural",
    "important",
)
TOPICS = (
    "photosynthesis", "bees", "recycling", "the moon", "volcanoes", "rainbows", "gravity",
    "the internet", "vaccines", "earthquakes", "electricity", "the ocean", "dinosaurs",
    "clouds", "magnets", "coffee", "bread", "sleep", "trees", "the heart",
)  # fmt: skip
TEMPLATES = (
    "Explain {} in simple terms.",
    "Tell me an interesting fact about {}.",
    "Why does {} matter?",
)


def rule(answer: str) -> int:
    """The stand-in voter's taste: fewer stock phrases is better."""
    text = answer.lower()
    return -sum(text.count(p) for p in STOCK_PHRASES)


def prompts() -> list[str]:
    return [t.format(topic) for topic in TOPICS for t in TEMPLATES]


def answer_pool(
    base: str, *, samples: int, max_new_tokens: int, cache: Path
) -> dict[str, list[str]]:
    """{prompt: real base-model answers}, sampled once and cached chunk by chunk."""
    from trainer.reward import sample_reference_answers

    path = cache / f"pool-{len(prompts())}x{samples}-{max_new_tokens}.json"
    pool: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}
    todo = [p for p in prompts() if len(pool.get(p, [])) < samples]
    cache.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), 8):
        chunk = todo[start : start + 8]
        asked = [p for p in chunk for _ in range(samples)]
        started = time.perf_counter()
        answers = sample_reference_answers(
            base,
            asked,
            max_new_tokens=max_new_tokens,
            temperature=0.7,
            seed=start,
            batch_size=len(asked),
        )
        for prompt, answer in zip(asked, answers, strict=True):
            pool.setdefault(prompt, []).append(answer)
        path.write_text(json.dumps(pool, indent=1))
        print(
            f"sampled {len(answers)} base answers in {time.perf_counter() - started:.0f}s "
            f"({start + len(chunk)}/{len(todo)} prompts)",
            flush=True,
        )
    return pool


def sentences(answers: list[str]) -> list[str]:
    """Complete sentences only (answers cut by the token limit lose their last piece)."""
    found = []
    for answer in answers:
        for s in re.split(r"(?<=[.!?])\s+", answer.strip()):
            if s.endswith((".", "!", "?")) and len(s) > 20 and s not in found:
                found.append(s)
    return found


def make_pairs(pool: dict[str, list[str]], prompt_list: list[str], n: int, seed: int):
    """n (prompt, a, b) with answers recombined from the prompt's real sentences; the rule
    must not tie (ties are voted too, but not counted in n)."""
    rng = random.Random(seed)
    by_prompt = {p: sentences(pool[p]) for p in prompt_list}
    usable = [p for p in prompt_list if len(by_prompt[p]) >= 3]
    out, ties = [], 0
    while len(out) < n:
        prompt = rng.choice(usable)
        a, b = (" ".join(rng.sample(by_prompt[prompt], rng.randint(2, 3))) for _ in range(2))
        if a == b:
            continue
        if rule(a) == rule(b):
            ties += 1
            continue
        out.append((prompt, a, b))
    return out, ties


def fill_store(store, pairs, *, users: int) -> None:
    """Each pair as a battle in its own conversation, voted by the rule."""
    user_ids = [store.create_user().id for _ in range(users)]
    for i, (prompt, a, b) in enumerate(pairs):
        user_id = user_ids[i % users]
        conversation = store.create_conversation(user_id)
        question = store.add_message(conversation.id, "user", prompt)
        ma, mb = (
            store.add_message(
                conversation.id, "assistant", t, parent_id=question.id, version="base"
            )
            for t in (a, b)
        )
        battle = store.create_battle(user_id, question.id, ma.id, mb.id, pairing="bench")
        store.vote_battle(battle.id, user_id, "a" if rule(a) > rule(b) else "b")


def run(args: argparse.Namespace) -> dict:
    import torch

    from storage import Store
    from trainer.data import PreferencePair
    from trainer.models import resolve_base_model
    from trainer.reward import evaluate_pairs, train_reward_model
    from trainer.reward_config import RewardConfig

    base = resolve_base_model("embedded", REPO / ".cache")
    pool = answer_pool(
        base,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        cache=REPO / ".cache" / "bench",
    )
    all_prompts = sorted(pool)
    random.Random(args.seed).shuffle(all_prompts)
    n_heldout = max(1, len(all_prompts) // 5)
    heldout_prompts, train_prompts = all_prompts[:n_heldout], all_prompts[n_heldout:]
    heldout, _ = make_pairs(pool, heldout_prompts, args.heldout_pairs, seed=args.seed + 1)
    heldout_pairs = [
        PreferencePair(
            prompt=[{"role": "user", "content": p}],
            chosen=a if rule(a) > rule(b) else b,
            rejected=b if rule(a) > rule(b) else a,
            source="battle",
            user_id=0,
            conversation_id=0,
            chosen_version="base",
            rejected_version="base",
            source_ids=(),
            message_ids=(),
        )
        for p, a, b in heldout
    ]
    report = {
        "machine": {"torch_threads": torch.get_num_threads(), "device": args.device},
        "setup": {
            "backbone": "SmolLM2-135M-Instruct (embedded, fp32)",
            "rule": "voter prefers fewer stock phrases: " + ", ".join(STOCK_PHRASES),
            "prompts": {"train": len(train_prompts), "heldout": len(heldout_prompts)},
            "base_answers": sum(len(v) for v in pool.values()),
            "heldout_pairs": len(heldout_pairs),
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
        },
        "sizes": [],
    }
    for n in args.sizes:
        train, ties = make_pairs(pool, train_prompts, n, seed=args.seed + 100 + n)
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            store = Store(data_dir / "chat.db")
            fill_store(store, train, users=args.users)
            config = RewardConfig(
                learning_rate=args.lr,
                epochs=args.epochs,
                batch_size=args.batch_size,
                max_length=args.max_length,
                min_pairs=1,
                heldout_fraction=0.0,  # held out by prompt below, the same for every size
                user_share_cap=1.0,
                seed=args.seed,
                device=args.device,
                normalize_on="dataset",  # the dataset's answers are base-model sentences
                normalize_samples=64,
            )
            load_before = os.getloadavg()[0]
            started, cpu_started = time.perf_counter(), time.process_time()
            outcome = train_reward_model(store, config, data_dir=data_dir, base_model=base)
            total = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            load_after = os.getloadavg()[0]
            evaluated = time.perf_counter()
            metrics = evaluate_pairs(outcome.model, heldout_pairs)
            eval_seconds = time.perf_counter() - evaluated
            store.close()
        row = {
            "pairs": n,
            "rule_ties_skipped": ties,
            "heldout_accuracy": metrics["accuracy"],
            "heldout_brier": metrics["brier"],
            "heldout_ece": metrics["ece"],
            "train_seconds": outcome.metrics["train_seconds"],
            "seconds_per_pair_epoch": outcome.metrics["seconds_per_pair_epoch"],
            "train_loss": outcome.metrics["train_loss"],
            "run_seconds": total,
            "run_cpu_seconds_per_pair": cpu / n,
            "load_average": [load_before, load_after],
            "heldout_eval_seconds": eval_seconds,
        }
        print(json.dumps(row), flush=True)
        report["sizes"].append(row)
        write(report, Path(args.out))
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward.json").write_text(json.dumps(report, indent=2))
    setup = report["setup"]
    lines = [
        "# Reward model: held-out accuracy against pairs (bench/reward_bench.py)",
        "",
        f"Backbone {setup['backbone']}, LoRA r16 on q/k/v/o + score head, "
        f"{setup['epochs']} epoch(s), lr {setup['learning_rate']}, batch {setup['batch_size']}, "
        f"max_length {setup['max_length']}; torch threads {report['machine']['torch_threads']}, "
        f"device {report['machine']['device']}.",
        f"Voters: {setup['rule']}. Held out: {setup['heldout_pairs']} pairs on "
        f"{setup['prompts']['heldout']} prompts never trained on "
        f"({setup['prompts']['train']} training prompts, {setup['base_answers']} real base answers "
        "recombined by sentence).",
        "",
        "| pairs | held-out accuracy | Brier | ECE | train s (wall) | wall s per pair-epoch "
        "| CPU s per pair | load average before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["sizes"]:
        lines.append(
            f"| {r['pairs']} | {r['heldout_accuracy']:.3f} | {r['heldout_brier']:.3f} | "
            f"{r['heldout_ece']:.3f} | {r['train_seconds']:.0f} | {r['seconds_per_pair_epoch']:.2f} | "
            f"{r['run_cpu_seconds_per_pair']:.2f} | {r['load_average'][0]:.1f} / "
            f"{r['load_average'][1]:.1f} |"
        )
    (out / "reward.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--samples", type=int, default=2, help="base answers per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--heldout-pairs", type=int, default=100)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch threads (1 behaves better on a shared machine)"
    )
    parser.add_argument("--pool-only", action="store_true", help="only sample the answer pool")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.pool_only:
        from trainer.models import resolve_base_model

        base = resolve_base_model("embedded", REPO / ".cache")
        pool = answer_pool(
            base,
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            cache=REPO / ".cache" / "bench",
        )
        print(sum(len(v) for v in pool.values()), "answers")
        return
    run(args)


if __name__ == "__main__":
    main()
