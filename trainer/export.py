"""Datasets as files: TRL's conversational JSONL formats, and a raw dump of every table.

    trl-pairs  {"prompt": [messages], "chosen": [assistant], "rejected": [assistant], ...}
               the preference format TRL's RewardTrainer and DPOTrainer read
    kto        {"prompt": [messages], "completion": [assistant], "label": bool, ...}
               TRL's unpaired preference format (KTOTrainer)
    raw        {"table": NAME, ...the row's columns} for every row of every table

Each example also carries where it came from: source, user_id, user_flagged,
conversation_id, the versions judged, source_ids, message_ids, its split (train or
heldout) and `weight`.

By default every judgment is written as it was made: flagged users' and repeated votes
too, every `weight` the judgment's own (1, or a retry's lower weight). `as_trained=True`
(`export --as-trained`) writes what the reward model trains on instead: flagged users
and repeated votes left out, and `weight` times the per-user weight.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data import (
    DEFAULT_MAX_USER_SHARE,
    DataReport,
    LabeledAnswer,
    PreferencePair,
    build_dataset,
)

if TYPE_CHECKING:
    from storage import Store

FORMATS = ("trl-pairs", "kto", "raw")


def pair_record(pair: PreferencePair, split: str, flagged: bool = False) -> dict[str, Any]:
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "weight": pair.trained_weight,
        "source": pair.source,
        "user_id": pair.user_id,
        "user_flagged": flagged,
        "conversation_id": pair.conversation_id,
        "chosen_version": pair.chosen_version,
        "rejected_version": pair.rejected_version,
        "source_ids": list(pair.source_ids),
        "message_ids": list(pair.message_ids),
        "split": split,
    }


def kto_record(example: LabeledAnswer, split: str, flagged: bool = False) -> dict[str, Any]:
    return {
        "prompt": example.prompt,
        "completion": [{"role": "assistant", "content": example.completion}],
        "label": example.label,
        "weight": example.trained_weight,
        "source": example.source,
        "user_id": example.user_id,
        "user_flagged": flagged,
        "conversation_id": example.conversation_id,
        "version": example.version,
        "source_ids": list(example.source_ids),
        "message_ids": list(example.message_ids),
        "split": split,
    }


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line to a temporary sibling, then rename; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def export(
    store: Store,
    fmt: str,
    out: str | Path,
    *,
    heldout_fraction: float = 0.2,
    max_user_share: float = DEFAULT_MAX_USER_SHARE,
    seed: int = 0,
    as_trained: bool = False,
) -> tuple[int, DataReport | None]:
    """Write the store's examples (or, for `raw`, its tables) to `out`; returns how many
    lines were written and, for the example formats, the data report. Every judgment
    unless `as_trained` (then the training filters and weights apply)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "raw":
        rows = ({"table": t, **row} for t in store.data_tables() for row in store.table_rows(t))
        return write_jsonl(rows, out), None
    data = build_dataset(
        store,
        heldout_fraction=heldout_fraction,
        max_user_share=max_user_share,
        seed=seed,
        training_filters=as_trained,
    )
    flagged = {u.user_id for u in store.judgments_per_user() if u.is_flagged}
    records: list[dict[str, Any]] = []
    if fmt == "trl-pairs":
        for split, pairs in (("train", data.train_pairs), ("heldout", data.heldout_pairs)):
            records += [pair_record(p, split, p.user_id in flagged) for p in pairs]
    else:
        for split, labeled in (("train", data.train_unpaired), ("heldout", data.heldout_unpaired)):
            records += [kto_record(e, split, e.user_id in flagged) for e in labeled]
    return write_jsonl(records, out), data.report
