"""PPO bench: does LoRA PPO move the real SmolLM2 towards a programmatic reward, what
does a round cost (generation, scoring, training), and what does the efficient path buy
over the simplest correct one.

The reward is a taste the base model already shows sometimes: concise answers. An
answer of 1-10 words scores 1, every word past 10 costs 1/30, down to -1; an empty
answer scores -1, and an answer cut off at `max_new_tokens` gets PPO's no-EOS penalty
(-1). The held-out prompts are disjoint from the training prompts.

1. learning: for each prompt count N (32, 64), a fresh LoRA on the base; reward, KL to
   the base, length and no-EOS rate on the held-out prompts before, after one round and
   after `--rounds` rounds; seconds per round split into generation, scoring, training.
   (The rounds after the first run as a second `run_ppo` call with seed + 1, so a fresh
   Adam state and a new prompt order; beta carries over.)
2. simple vs efficient: one round on the same `--compare-prompts` prompts, from a fresh
   adapter, for the simplest correct configuration (one prompt at a time, no key/value
   cache so every token re-runs the whole sequence, scoring one sequence at a time),
   then switching on the key/value cache, batched generation and batched scoring one by
   one, so each step's share of the difference shows.

    .venv/bin/python bench/ppo_bench.py --sizes 32 64 --rounds 3 3 --out bench/results

Writes OUT/ppo.md (tables, then the raw numbers as JSON) after every measurement (a
cut-short run keeps what it measured). The machine's load average is recorded beside each number: other work on
a shared machine slows some measurements more than others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPICS = (
    "photosynthesis", "bees", "recycling", "the moon", "volcanoes", "rainbows", "gravity",
    "the internet", "vaccines", "earthquakes", "electricity", "the ocean", "dinosaurs",
    "clouds", "magnets", "coffee", "bread", "sleep", "trees", "the heart", "tides", "snow",
    "batteries", "bicycles", "music", "maps", "glass", "salt", "wind", "honey",
)  # fmt: skip
TEMPLATES = (
    "What is {}?",
    "Tell me one fact about {}.",
    "In one sentence, why does {} matter?",
)
HELDOUT = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "What is 7 times 6?",
    "Give me a synonym for happy.",
    "What color is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "How many legs does a spider have?",
    "What is the boiling point of water in Celsius?",
    "Tell me one fact about penguins.",
    "What is a verb?",
    "Why do leaves change color in autumn?",
    "What is the largest planet in our solar system?",
    "Suggest a name for a cat.",
    "What does a thermometer measure?",
    "In one sentence, what is democracy?",
    "What is the opposite of cold?",
]
SIMPLE = {"batched_generation": False, "generation_cache": False, "batched_scoring": False}
STEPS = [
    ("simplest: one prompt at a time, no KV cache, scoring one sequence at a time", SIMPLE),
    ("+ KV cache", {**SIMPLE, "generation_cache": True}),
    ("+ batched generation", {"batched_generation": True, "batched_scoring": False}),
    ("+ batched scoring (the default)", {}),
]


def concise_reward(prompts: list, completions: list[str]) -> list[float]:
    """1 for 1-10 words, 1/30 less per word past 10, never below -1; -1 when empty."""
    scores = []
    for text in completions:
        words = len(text.split())
        scores.append(-1.0 if words == 0 else max(-1.0, 1.0 - max(0, words - 10) / 30))
    return scores


def train_prompts() -> list[str]:
    return [t.format(topic) for topic in TOPICS for t in TEMPLATES]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def evaluate(policy, tokenizer, config) -> dict:
    from trainer.evaluation import sample_policy

    t0 = time.perf_counter()
    ev = sample_policy(
        policy, tokenizer, HELDOUT, concise_reward, config, samples=len(HELDOUT), seed=1234
    )
    return {**ev.summary(), "seconds": round(time.perf_counter() - t0, 1), "load": load()}


def round_record(stats) -> dict:
    keys = ("reward", "kl", "beta", "entropy", "clipfrac", "approx_kl", "value_loss")
    keys += ("response_length", "no_eos_rate", "generation_s", "scoring_s", "training_s")
    return {"round": stats.round, "load": load(), **{k: getattr(stats, k) for k in keys}}


def learning(base: str, config, n_prompts: int, rounds: int) -> dict:
    """Held-out reward before, after one round and after `rounds` rounds."""
    from trainer.ppo import build_policy, run_ppo

    config = replace(config, rollout_batch_size=n_prompts, generation_batch_size=n_prompts)
    policy, tokenizer = build_policy(base, config)
    prompts = train_prompts()
    out = {"prompts_per_round": n_prompts, "before": evaluate(policy, tokenizer, config)}
    first = run_ppo(policy, tokenizer, prompts, concise_reward, replace(config, rounds=1))
    out["rounds"] = [round_record(first.final)]
    out["after_1"] = evaluate(policy, tokenizer, config)
    print(f"  N={n_prompts} {first.final.summary()}", flush=True)
    if rounds > 1:
        more = replace(config, rounds=rounds - 1, seed=config.seed + 1)
        rest = run_ppo(
            policy,
            tokenizer,
            prompts,
            concise_reward,
            more,
            progress=lambda s: print(f"  N={n_prompts} (+1) {s.summary()}", flush=True),
        )
        out["rounds"] += [{**round_record(s), "round": s.round + 1} for s in rest.rounds]
        out[f"after_{rounds}"] = evaluate(policy, tokenizer, config)
    return out


def compare(base: str, config, n_prompts: int) -> list[dict]:
    """One round from a fresh adapter per configuration, on the same prompts."""
    from trainer.ppo import build_policy, run_ppo

    prompts = train_prompts()[:n_prompts]
    rows = []
    for label, flags in STEPS:
        step_config = replace(
            config,
            rounds=1,
            rollout_batch_size=n_prompts,
            generation_batch_size=n_prompts,
            minibatch_size=min(config.minibatch_size, n_prompts),
            **flags,
        )
        policy, tokenizer = build_policy(base, step_config)
        stats = run_ppo(policy, tokenizer, prompts, concise_reward, step_config).final
        rows.append({"step": label, **flags, **round_record(stats)})
        print(f"  {label}: {stats.summary()}", flush=True)
    return rows


def write(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = f"## Raw results\n\n```json\n{json.dumps(results, indent=1)}\n```\n"
    (out_dir / "ppo.md").write_text(report(results) + "\n" + raw)


def _eval_row(label: str, ev: dict) -> str:
    return (
        f"| {label} | {ev['mean_reward']:+.3f} | {ev['kl_to_base']:.3f} | {ev['median_length']:.1f} "
        f"| {ev['no_eos_rate']:.0%} | {ev['load']} |"
    )


def _round_row(r: dict) -> str:
    total = r["generation_s"] + r["scoring_s"] + r["training_s"]
    return (
        f"| {r['round']} | {r['reward']:+.3f} | {r['kl']:.3f} | {r['beta']:.3f} "
        f"| {r['clipfrac']:.3f} | {r['approx_kl']:.4f} | {r['response_length']:.1f} "
        f"| {r['generation_s']:.1f} | {r['scoring_s']:.1f} | {r['training_s']:.1f} "
        f"| {total:.1f} | {r['load']} |"
    )


def report(results: dict) -> str:
    lines = ["# PPO bench", "", results["setup"], ""]
    for run in results.get("learning", []):
        n = run["prompts_per_round"]
        lines += [f"## {n} prompts per round", "", "Held-out prompts (16, one sample each):", ""]
        lines += [
            "| policy | reward | KL to base | length | no EOS | load |",
            "|---|---|---|---|---|---|",
        ]
        for key in ["before"] + sorted(k for k in run if k.startswith("after_")):
            lines.append(
                _eval_row(key.replace("_", " ") + " round(s)" * (key != "before"), run[key])
            )
        lines += ["", "Training rounds (on the round's own samples; seconds per phase):", ""]
        lines.append(
            "| round | reward | KL | beta | clipfrac | approx KL | length "
            "| gen s | score s | train s | total s | load |"
        )
        lines.append("|---" * 12 + "|")
        lines += [_round_row(r) for r in run["rounds"]]
        lines.append("")
    rows = results.get("compare", [])
    if rows:
        simple = rows[0]
        lines += [
            f"## Simplest correct version vs efficient path ({results['compare_prompts']} prompts,"
            " one round each)",
            "",
            "| configuration | gen s | score s | train s | total s | speed-up vs simplest "
            "| gen speed-up | score speed-up | mean length | load |",
            "|---" * 10 + "|",
        ]
        for r in rows:
            total = r["generation_s"] + r["scoring_s"] + r["training_s"]
            simple_total = simple["generation_s"] + simple["scoring_s"] + simple["training_s"]
            lines.append(
                f"| {r['step']} | {r['generation_s']:.1f} | {r['scoring_s']:.1f} "
                f"| {r['training_s']:.1f} | {total:.1f} | {simple_total / total:.2f}x "
                f"| {simple['generation_s'] / r['generation_s']:.2f}x "
                f"| {simple['scoring_s'] / r['scoring_s']:.2f}x "
                f"| {r['response_length']:.1f} | {r['load']} |"
            )
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="prompts/round")
    parser.add_argument(
        "--rounds", type=int, nargs="+", default=[3, 3], help="rounds, one count per size"
    )
    parser.add_argument("--compare-prompts", type=int, default=8, help="0 skips the comparison")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-dir", default=str(REPO / ".cache"), help="holds models/base")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from trainer.models import resolve_base_model
    from trainer.ppo_config import PPOConfig

    base = resolve_base_model("embedded", Path(args.data_dir))
    config = PPOConfig(max_new_tokens=args.max_new_tokens)
    results: dict = {
        "setup": (
            f"SmolLM2-135M-Instruct (fp32, CPU, {torch.get_num_threads()} torch threads); "
            f"reward: concise answers (bench/ppo_bench.py); PPOConfig defaults except "
            f"rollout size: minibatch {config.minibatch_size}, {config.ppo_epochs} epochs, "
            f"lr {config.learning_rate}, max_new_tokens {config.max_new_tokens}, "
            f"temperature {config.temperature}, init beta {config.init_kl_coef}, "
            f"target KL {config.target_kl}, no-EOS score {config.no_eos_penalty}."
        ),
        "learning": [],
        "compare_prompts": args.compare_prompts,
        "command": " ".join(sys.argv[1:]),
        "notes": [],
    }
    started = time.perf_counter()
    for n, rounds in zip(args.sizes, args.rounds, strict=True):
        print(f"learning with {n} prompts per round, {rounds} rounds", flush=True)
        results["learning"].append(learning(base, config, n, rounds))
        write(results, Path(args.out))
    if args.compare_prompts:
        print(f"simplest vs efficient on {args.compare_prompts} prompts", flush=True)
        results["compare"] = compare(base, config, args.compare_prompts)
    results["seconds"] = round(time.perf_counter() - started)
    results["notes"].append(
        f"whole bench: {results['seconds']} s (arguments: {results['command']})"
    )
    write(results, Path(args.out))
    print(f"wrote {args.out}/ppo.md in {results['seconds']}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
