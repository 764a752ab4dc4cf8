"""Serving benchmark: the app path against raw `generate`, and concurrency scaling.

Starts `rlhf-chat serve` on a free port with the embedded model (the conversion is
cached in the data directory, as on a second `make run`), then measures in one run:

- cold start: process start to the first streamed token of the first chat;
- one chat's tokens/s through HTTP streaming vs `model.generate` in this process
  (same prompt, greedy, same token budget) — the ratio is what the app costs;
- aggregate tokens/s with 1, 4 and 8 concurrent streaming chats, and the ratio to 1.

Usage: python bench/serving_bench.py [--data-dir DIR] [--tokens N] [--out FILE]
Timings on a shared machine are noisy: read the ratios, and the medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server import running_server  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def stream_chat(url: str, token: str, prompt: str, tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_new_tokens": tokens,
        "temperature": 0.0,
    }
    start = time.perf_counter()
    first = None
    done = {}
    with httpx.stream(
        "POST",
        f"{url}/api/chat?stream=true",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    ) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "delta" in event and first is None:
                first = time.perf_counter()
            if event.get("done"):
                done = event
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "seconds": end - start, "n_tokens": done["n_tokens"]}


def raw_generate_tps(model_dir: str, tokens: int, repeats: int) -> tuple[float, int]:
    import torch

    from trainer.models import chat_prompt_ids, load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    ids = torch.tensor([chat_prompt_ids(tokenizer, [{"role": "user", "content": PROMPT}])])
    rates, n = [], 0
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            n = out.shape[1] - ids.shape[1]
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), n


def concurrent_tps(url: str, token: str, users: int, tokens: int) -> float:
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(stream_chat(url, token, f"{PROMPT} ({i})", tokens))
        )
        for i in range(users)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r["n_tokens"] for r in results) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="data directory with models/base")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/serving.json")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    from trainer.models import resolve_base_model

    model_dir = resolve_base_model("embedded", data_dir)  # conversion cached, like a 2nd start
    report: dict = {"tokens_per_answer": args.tokens}
    started = time.perf_counter()
    with running_server(data_dir, backend="local") as server:
        token = httpx.post(f"{server.url}/api/session").json()["user_token"]
        first = stream_chat(server.url, token, PROMPT, 4)
        report["cold_start_to_first_token_s"] = (
            time.perf_counter() - started - (first["seconds"] - first["ttft"])
        )
        app_runs = [
            stream_chat(server.url, token, PROMPT, args.tokens) for _ in range(args.repeats)
        ]
        report["app_single_tps"] = statistics.median(r["n_tokens"] / r["seconds"] for r in app_runs)
        report["app_ttft_s"] = statistics.median(r["ttft"] for r in app_runs)
        report["concurrent_tps"] = {
            users: statistics.median(
                concurrent_tps(server.url, token, users, args.tokens) for _ in range(args.repeats)
            )
            for users in (1, 4, 8)
        }
    raw_tps, _ = raw_generate_tps(model_dir, args.tokens, args.repeats)
    report["raw_generate_tps"] = raw_tps
    report["app_vs_raw_ratio"] = report["app_single_tps"] / raw_tps
    base = report["concurrent_tps"][1]
    report["concurrency_ratio_vs_1"] = {u: v / base for u, v in report["concurrent_tps"].items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
