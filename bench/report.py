"""The loop benchmark's report: `report.json` (the shape other tools read), PNG plots
and `report.md`, all in one directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = {
    "win_rate.png": "Oracle win rate against base (held-out prompts, 95% bootstrap interval)",
    "kl.png": "KL to the base model (nats per answer)",
    "length.png": "Median answer length relative to base",
    "reward_model.png": "Reward model per cycle: held-out vote accuracy and oracle agreement",
}


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, the plots and report.md into `out`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths += write_plots(out, report)
    md = out / "report.md"
    md.write_text(markdown(report))
    return [*paths, md]


def write_plots(out: Path, report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = report["versions"]
    names = [v["name"] for v in versions]
    x = list(range(len(names)))
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.suptitle(PLOTS[name], fontsize=10)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    rates = [v["oracle_win_rate_vs_base"] for v in versions]
    low = [r - v["ci95"][0] for r, v in zip(rates, versions, strict=True)]
    high = [v["ci95"][1] - r for r, v in zip(rates, versions, strict=True)]
    ax.errorbar(x, rates, yerr=[low, high], fmt="o-", capsize=4)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1), ylabel="win rate (ties half)")
    save(fig, "win_rate.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [v["kl_to_base"] for v in versions], "o-")
    ax.set(xticks=x, xticklabels=names, ylabel="nats per answer")
    save(fig, "kl.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [v["median_length_ratio"] for v in versions], "o-")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xticks=x, xticklabels=names, ylabel="median length / base")
    save(fig, "length.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    cycles = report["cycles"]
    cx = [c.get("cycle", i + 1) for i, c in enumerate(cycles)]
    for key, label in (
        ("reward_model_accuracy", "held-out vote accuracy"),
        ("reward_model_oracle_agreement", "agreement with the oracle"),
    ):
        ys = [c.get(key) for c in cycles]
        ax.plot(cx, [float("nan") if y is None else y for y in ys], "o-", label=label)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(xticks=cx, xlabel="cycle", ylim=(0, 1), ylabel="share of pairs")
    ax.legend(fontsize=8)
    save(fig, "reward_model.png")
    return paths


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(pair: Any) -> str:
    return "n/a" if pair is None else f"[{_num(pair[0])}, {_num(pair[1])}]"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def config_line(settings: dict[str, Any]) -> str:
    """Which settings the run used: a config file or the product defaults, and any
    `RLHF_CHAT_*` environment settings on top."""
    config = settings.get("config_file")
    line = f"Config file `{config}`" if config else "No config file (the product defaults)"
    env = settings.get("environment") or {}
    if env:
        line += ", with " + ", ".join(f"`{k}={v}`" for k, v in env.items())
    return line + "."


def markdown(report: dict[str, Any]) -> str:
    s = report.get("settings", {})
    lines = [
        "# Loop benchmark",
        "",
        f"Oracle `{s.get('oracle')}`, model `{s.get('model_source')}`. {config_line(s)} "
        f"Cycles: {s.get('cycles')}, each after {s.get('votes_per_cycle')} battle votes and "
        f"{s.get('chats_per_cycle')} thumbed chats by {s.get('users')} simulated users "
        f"(noise {s.get('noise')}). Win rates: {s.get('heldout_prompts')} held-out prompts, "
        f"{s.get('samples')} sample(s) each at temperature {s.get('temperature')} and at most "
        f"{s.get('max_new_tokens')} new tokens (the serving length of the simulated chats), "
        "each answer against a base answer to the same prompt; ties count half. Intervals "
        "are 95% bootstrap intervals resampling whole prompts. A tie is a pair the oracle "
        "scores equal; the decisive win rate leaves ties out. Lengths are in tokens; no EOS "
        "is the share of answers cut at the token limit. All numbers come from this one run.",
        "",
        "| version | status | win rate vs base | 95% interval | tie share | decisive win rate "
        "| 95% interval | KL to base | median length | length ratio | no EOS "
        "| mean oracle score |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in report["versions"]:
        lines.append(
            f"| {v['name']} | {v.get('status', '')} | {_num(v['oracle_win_rate_vs_base'])} | "
            f"{_interval(v['ci95'])} | {_share(v.get('tie_share'))} | "
            f"{_num(v.get('decisive_win_rate'))} | {_interval(v.get('decisive_ci95'))} | "
            f"{_num(v['kl_to_base'])} | {_num(v.get('median_length'), 1)} | "
            f"{_num(v['median_length_ratio'], 2)} | {_share(v.get('no_eos_rate'))} | "
            f"{_num(v.get('mean_oracle_score'))} |"
        )
    lines += [
        "",
        "| cycle | outcome | version | votes | training seconds | reward-model accuracy "
        "(held-out votes) | agreement with oracle |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(report["cycles"], 1):
        lines.append(
            f"| {c.get('cycle', i)} | {c.get('outcome') or c.get('status', '')} | "
            f"{c.get('version') or ''} | {c['votes']} | {_num(c['seconds'], 0)} | "
            f"{_num(c['reward_model_accuracy'])} | "
            f"{_num(c.get('reward_model_oracle_agreement'))} |"
        )
    lines.append("")
    for name, title in PLOTS.items():
        lines += [f"![{title}]({name})", ""]
    return "\n".join(lines)
