"""Time PPO rounds on a CUDA GPU with SmolLM2-135M's architecture.

Usage: python bench/ppo_gpu_round.py --model DIR [--prompts 32 64] [--rounds 1] [--out FILE]

DIR holds a config.json and tokenizer files. If it holds no weights the model is
initialised at random (a checkpoint too big to copy to the GPU machine can be timed
this way): random weights rarely emit EOS, so every completion runs to
`max_new_tokens` and the times are an upper bound for a round of that size. Prints one
line per round with seconds split into generation, scoring and training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainer.ppo import build_policy, run_ppo  # noqa: E402
from trainer.ppo_config import PPOConfig  # noqa: E402

PROMPTS = [
    "Give me a tip for sleeping better.",
    "How do I boil an egg?",
    "Write a two-line poem about rain.",
    "What is a good name for a cat?",
    "How can I focus while studying?",
    "Suggest a quick breakfast.",
    "Explain what a budget is.",
    "How do plants drink water?",
]


def exclamation_share(prompts: list, completions: list[str]) -> list[float]:
    """A programmatic reward: the share of sentences that end with '!'."""
    scores = []
    for text in completions:
        ends = [c for c in text if c in ".!?"]
        scores.append(ends.count("!") / len(ends) if ends else 0.0)
    return scores


def materialize(model_dir: Path, work: Path) -> Path:
    """`model_dir` itself when it has weights; else a copy with random weights."""
    if any(model_dir.glob("*.safetensors")):
        return model_dir
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    model.save_pretrained(work)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(work)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model_dir = materialize(args.model, Path("/tmp/ppo-gpu-model"))
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"}
    for n in args.prompts:
        config = PPOConfig.gpu(
            device=args.device,
            rounds=args.rounds,
            rollout_batch_size=n,
            generation_batch_size=n,
            minibatch_size=min(16, max(1, n // 4)),
        )
        policy, tokenizer = build_policy(model_dir, config)
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        result = run_ppo(policy, tokenizer, prompts, exclamation_share, config)
        for stats in result.rounds:
            print(f"{n} prompts: {stats.summary()}")
        report[str(n)] = [
            {k: getattr(s, k) for k in ("generation_s", "scoring_s", "training_s", "kl", "reward")}
            for s in result.rounds
        ]
        report[f"{n}_config"] = {
            k: getattr(config, k)
            for k in ("max_new_tokens", "minibatch_size", "ppo_epochs", "rollout_batch_size")
        }
        del policy
        torch.cuda.empty_cache()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
