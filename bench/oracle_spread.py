"""How decisive is an oracle on the base model's own answers?

    python -m bench.oracle_spread --oracle bench.oracles:friendliness [--oracle ...]

Samples a few answers of the base model to each of the first train prompts (as the
arena does: several samples of one prompt), then, for every pair of answers to the
same prompt, takes the oracle's score difference and reports what the simulated
voters (app/simulate/) would make of it at `--noise`:

- exact ties: equal scores, which the simulator always votes "tie" (nothing learnt);
- near ties: |difference| < noise, where a vote agrees with the oracle less than 73%
  of the time (sigmoid(1)), nearly a coin flip;
- decisive: |difference| >= noise;
- vote agreement: the expected share of votes that agree with the oracle, ties half.

An oracle that ties most pairs gives the reward model nothing to learn however many
votes are cast (a taste the base model never shows teaches nothing).
Answers can be saved (`--save`) and re-judged without sampling (`--answers`).

With `--reward-check N`, it also asks whether the linear reward head can see the taste:
mean-pooled features of the base model at the configured `reward.feature_layer`,
noisy votes (as the simulator casts them) on every answer pair of half the prompts,
the head fitted with the configured `reward.l2`, and its agreement with the oracle on
the other half's pairs (oracle ties left out), over N random splits of the prompts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from app.simulate import load_oracle, load_prompts, sigmoid

PROMPTS = Path(__file__).resolve().parent / "prompts"
Oracle = Callable[[str, str], float]


@dataclass
class Spread:
    """What the voters would make of an oracle's score differences on answer pairs."""

    pairs: int
    exact_ties: float  # share of pairs with equal scores
    near_ties: float  # share with 0 < |difference| < noise
    decisive: float  # share with |difference| >= noise
    vote_agreement: float  # expected share of votes agreeing with the oracle, ties half
    score_min: float
    score_median: float
    score_max: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}


def spread(groups: Sequence[Sequence[float]], *, noise: float, tie_margin: float = 0.0) -> Spread:
    """Spread over every pair of scores within a group (answers to one prompt)."""
    diffs = [abs(a - b) for g in groups for a, b in combinations(g, 2)]
    if not diffs:
        raise ValueError("no pairs: every group needs at least two scores")
    scores = sorted(s for g in groups for s in g)
    n = len(diffs)
    ties = sum(d <= tie_margin for d in diffs)
    decisive = sum(d > tie_margin and d >= noise for d in diffs)
    if noise > 0:
        agree = [0.5 if d <= tie_margin else sigmoid(d / noise) for d in diffs]
    else:
        agree = [0.5 if d <= tie_margin else 1.0 for d in diffs]
    return Spread(
        pairs=n,
        exact_ties=ties / n,
        near_ties=(n - ties - decisive) / n,
        decisive=decisive / n,
        vote_agreement=statistics.fmean(agree),
        score_min=scores[0],
        score_median=statistics.median(scores),
        score_max=scores[-1],
    )


def spread_out(prompts: Sequence[str], n: int) -> list[str]:
    """`n` prompts evenly spaced over the list (the prompt files are ordered by kind)."""
    if n >= len(prompts):
        return list(prompts)
    return [prompts[i * len(prompts) // n] for i in range(n)]


def sample_base_answers(
    prompts: Sequence[str],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    data_dir: Path | None = None,
) -> list[dict[str, object]]:
    """`samples` answers of the product's default base model (the embedded one unless
    `RLHF_CHAT_MODEL_SOURCE` says otherwise) to each prompt, as
    [{"prompt", "answers": [...], "has_eos": [...]}]."""
    from app.config import load_config
    from bench.measure import eval_config, sample_answers, usable_prompts
    from trainer.models import resolve_base_model

    with tempfile.TemporaryDirectory() as tmp:
        where = data_dir or Path(tmp)
        config = load_config(None, overrides={"storage.data_dir": where})
        base = resolve_base_model(config.model.source, where)
        sampling = eval_config(config.ppo, temperature=temperature, max_new_tokens=max_new_tokens)
        usable = usable_prompts(base, prompts, sampling)
        answers = sample_answers(base, "base", None, usable, sampling, samples=samples, seed=seed)
    texts = answers.by_prompt(answers.texts)  # type: ignore[arg-type]
    eos = answers.by_prompt(answers.has_eos)  # type: ignore[arg-type]
    return [
        {"prompt": p, "answers": t, "has_eos": e}
        for p, t, e in zip(usable, texts, eos, strict=True)
    ]


def judge_groups(oracle: Oracle, sampled: Sequence[dict]) -> list[list[float]]:
    return [[float(oracle(s["prompt"], a)) for a in s["answers"]] for s in sampled]


def answer_features(sampled: Sequence[dict], data_dir: Path | None) -> list[list[Any]]:
    """Each answer's mean hidden state at `reward.feature_layer` of the base model, as
    the linear reward head reads it, grouped by prompt."""
    import torch

    from app.config import load_config
    from trainer.models import load_tokenizer, resolve_base_model
    from trainer.reward import render_with_answer_start
    from trainer.reward_linear import load_feature_backbone

    with tempfile.TemporaryDirectory() as tmp:
        where = data_dir or Path(tmp)
        config = load_config(None, overrides={"storage.data_dir": where})
        base = resolve_base_model(config.model.source, where)
        tokenizer = load_tokenizer(base)
        model = load_feature_backbone(base, config.reward.feature_layer)
    groups = []
    with torch.no_grad():
        for s in sampled:
            group = []
            for answer in s["answers"]:
                ids, start = render_with_answer_start(tokenizer, s["prompt"], answer, 1024)
                hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]  # (T, H)
                group.append(hidden[start:].mean(0).double())
            groups.append(group)
    return groups


def reward_check(
    features: Sequence[Sequence[Any]],
    scores: Sequence[Sequence[float]],
    *,
    noise: float,
    l2: float,
    splits: int,
    seed: int = 0,
) -> list[tuple[int, float | None]]:
    """Per random split of the prompts in halves: (votes the head was fitted on, its
    agreement with the oracle on the other half's answer pairs)."""
    import random

    import torch

    from app.simulate import choose_outcome
    from trainer.reward_linear import fit_head, standardized

    results: list[tuple[int, float | None]] = []
    for k in range(splits):
        rng = random.Random(seed * 1000 + k)
        order = list(range(len(features)))
        rng.shuffle(order)
        train, test = order[: len(order) // 2], order[len(order) // 2 :]
        chosen, rejected = [], []
        for g in train:
            for i, j in combinations(range(len(features[g])), 2):
                vote = choose_outcome(scores[g][i], scores[g][j], noise=noise, rng=rng)
                if vote in ("a", "b"):
                    better, worse = (i, j) if vote == "a" else (j, i)
                    chosen.append(features[g][better])
                    rejected.append(features[g][worse])
        if not chosen:
            results.append((0, None))
            continue
        head, _ = fit_head(torch.stack(chosen), torch.stack(rejected), l2=l2)
        agree = []
        for g in test:
            predicted = standardized(torch.stack(list(features[g])), head).mv(head["weight"])
            for i, j in combinations(range(len(features[g])), 2):
                truth = scores[g][i] - scores[g][j]
                if truth != 0:
                    agree.append(float((predicted[i] - predicted[j]) * truth > 0))
        results.append((len(chosen), statistics.fmean(agree) if agree else None))
    return results


def main(argv: list[str] | None = None, *, prog: str = "python -m bench.oracle_spread") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--oracle", action="append", required=True, metavar="MODULE:FUNC")
    p.add_argument("--prompts", type=Path, default=PROMPTS / "train.jsonl", metavar="FILE")
    p.add_argument("--n-prompts", type=int, default=32, help="N prompts spread over the file")
    p.add_argument("--samples", type=int, default=4, help="answers per prompt (at least 2)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--noise", type=float, default=0.5, help="voters' noise (bench loop's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answers", type=Path, metavar="FILE", help="judge saved answers instead")
    p.add_argument("--save", type=Path, metavar="FILE", help="save the sampled answers")
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="keep the converted base model here"
    )
    p.add_argument(
        "--reward-check",
        type=int,
        default=0,
        metavar="N",
        help="fit the linear reward head on half the prompts' votes, N splits (default 0: off)",
    )
    args = p.parse_args(argv)
    if args.samples < 2:
        print(f"{prog}: --samples must be at least 2 (pairs of answers)", file=sys.stderr)
        return 2
    oracles = {name: load_oracle(name) for name in args.oracle}
    if args.answers:
        sampled = json.loads(args.answers.read_text())
    else:
        prompts = spread_out(load_prompts(args.prompts), args.n_prompts)
        sampled = sample_base_answers(
            prompts,
            data_dir=args.data_dir,
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        if args.save:
            args.save.write_text(json.dumps(sampled, indent=1) + "\n")
    n_answers = sum(len(s["answers"]) for s in sampled)
    no_eos = 1 - statistics.fmean(e for s in sampled for e in s["has_eos"])
    print(f"{n_answers} answers to {len(sampled)} prompts, no EOS {no_eos:.0%}, noise {args.noise}")
    print("oracle                          exact ties  near ties  decisive  vote agreement")
    for name, oracle in oracles.items():
        s = spread(judge_groups(oracle, sampled), noise=args.noise)
        print(
            f"{name:30}  {s.exact_ties:>10.0%}  {s.near_ties:>9.0%}  {s.decisive:>8.0%}"
            f"  {s.vote_agreement:>14.0%}   scores {s.score_min:.2f} / "
            f"{s.score_median:.2f} / {s.score_max:.2f}"
        )
    if args.reward_check > 0:
        from app.config import load_config

        l2 = load_config(None).reward.l2
        features = answer_features(sampled, args.data_dir)
        print(f"linear reward head (l2 {l2}) on half the prompts' votes, agreement on the rest:")
        for name, oracle in oracles.items():
            checks = reward_check(
                features,
                judge_groups(oracle, sampled),
                noise=args.noise,
                l2=l2,
                splits=args.reward_check,
                seed=args.seed,
            )
            agreements = [a for _, a in checks if a is not None]
            print(
                f"{name:30}  votes {', '.join(str(n) for n, _ in checks)}; agreement "
                + ", ".join("n/a" if a is None else f"{a:.2f}" for _, a in checks)
                + (f"; mean {statistics.fmean(agreements):.2f}" if agreements else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
