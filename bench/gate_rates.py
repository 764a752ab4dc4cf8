"""How often the gate passes an equal candidate and rejects a worse one, on SmolLM2.

    python -m bench.gate_rates --out DIR [--oracle bench.oracles:friendliness]

The scorer is an example oracle standing in for the reward model, standardized on the
base model's own answers (mean 0, std 1, as the reward model is). Three policies answer
the same held-out prompts, `--pool` answers per prompt, paired by seed:
- `base`, twice with the same seed (what the gate does with an unchanged candidate);
- `base` with another seed: equal quality, different answers (unpaired noise);
- `worse`: the base model after `--worse-rounds` PPO rounds against the oracle's
  negative, on the training prompts: worse by construction, by the same scorer.
Each of `--trials` gate decisions draws `prompts x per-prompt` pairs from the pool
without replacement per prompt (a trial stands in for a seed) and runs the gate with its
default settings. Writes `gate_rates.json` and prints the rates.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

from app.simulate import load_oracle, load_prompts
from trainer.cycle_config import GateConfig
from trainer.evaluation import sample_policy
from trainer.gate import PolicySamples, evaluate_gate
from trainer.models import resolve_base_model
from trainer.ppo import build_policy, run_ppo
from trainer.ppo_config import PPOConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gate_rates", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--oracle", default="bench.oracles:friendliness")
    p.add_argument("--prompts", type=Path, default=Path("bench/prompts/heldout.jsonl"))
    p.add_argument("--n-prompts", type=int, default=32)
    p.add_argument("--pool", type=int, default=8, help="answers per prompt and policy")
    p.add_argument("--per-prompt", type=int, default=4, help="pairs per prompt in one gate")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--worse-rounds", type=int, default=3, help="PPO rounds against -oracle")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    return p


def subsample(samples: PolicySamples, picks: list[int]) -> PolicySamples:
    return PolicySamples(
        prompt_ids=[samples.prompt_ids[i] for i in picks],
        rewards=[samples.rewards[i] for i in picks],
        kl=[samples.kl[i] for i in picks],
        lengths=[samples.lengths[i] for i in picks],
        has_eos=[samples.has_eos[i] for i in picks],
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    oracle = load_oracle(args.oracle)
    prompts = load_prompts(args.prompts)[: args.n_prompts]
    config = PPOConfig(max_new_tokens=args.max_new_tokens)
    base = resolve_base_model("embedded", args.data_dir)

    def score(ps: list[str], completions: list[str]) -> list[float]:
        return [oracle(p, c) for p, c in zip(ps, completions, strict=True)]

    n = len(prompts) * args.pool
    pools: dict[str, PolicySamples] = {}
    started = time.perf_counter()
    policy, tokenizer = build_policy(base, config)
    for name, seed in (("base", 1), ("base_other_seed", 2)):
        pools[name] = sample_policy(policy, tokenizer, prompts, score, config, samples=n, seed=seed)

    def negative(ps: list[str], completions: list[str]) -> list[float]:
        return [-x for x in score(ps, completions)]

    run_ppo(policy, tokenizer, load_prompts(), negative, replace(config, rounds=args.worse_rounds))
    pools["worse"] = sample_policy(policy, tokenizer, prompts, score, config, samples=n, seed=1)
    seconds = time.perf_counter() - started
    mean = statistics.fmean(pools["base"].rewards)
    std = statistics.pstdev(pools["base"].rewards) or 1.0
    for s in pools.values():
        s.rewards = [(r - mean) / std for r in s.rewards]

    gate = GateConfig()
    by_prompt: dict[int, list[int]] = {}
    for i, p in enumerate(pools["base"].prompt_ids):
        by_prompt.setdefault(p, []).append(i)
    comparisons = {
        "base vs base (same seeds)": ("base", "base"),
        "base vs base (another seed)": ("base_other_seed", "base"),
        "worse vs base": ("worse", "base"),
    }
    rates = {}
    for label, (cand, live) in comparisons.items():
        passed, reasons = 0, []
        for trial in range(args.trials):
            rng = random.Random(trial)
            picks = [i for rows in by_prompt.values() for i in rng.sample(rows, args.per_prompt)]
            result = evaluate_gate(
                subsample(pools[cand], picks), subsample(pools[live], picks), gate
            )
            passed += result.passed
            reasons.extend(result.reasons)
        rates[label] = {"pass_rate": passed / args.trials, "sample_reasons": reasons[:3]}
        print(f"{label}: passed {passed}/{args.trials}", flush=True)
    summary = {name: s.summary() for name, s in pools.items()}
    out = {
        "oracle": args.oracle,
        "prompts": len(prompts),
        "pool_per_prompt": args.pool,
        "pairs_per_gate": len(prompts) * args.per_prompt,
        "max_new_tokens": args.max_new_tokens,
        "worse_ppo_rounds": args.worse_rounds,
        "gate": gate.__dict__,
        "policies": summary,
        "rates": rates,
        "sampling_seconds": round(seconds),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate_rates.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["policies"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
