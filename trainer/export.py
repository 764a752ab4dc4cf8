"""Datasets as files: TRL's conversational JSONL formats, and a raw dump of every table.

    trl-pairs  {"prompt": [messages], "chosen": [assistant], "rejected": [assistant], ...}
               the preference format TRL's RewardTrainer and DPOTrainer read
    kto        {"prompt": [messages], "completion": [assistant], "label": bool, ...}
               TRL's unpaired preference format (KTOTrainer)
    raw        {"table": NAME, ...the row's columns} for every row of every table

Each example also carries where it came from: source, user_id, conversation_id, the
versions judged, source_ids, message_ids, and its split (train or heldout).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data import DataReport, LabeledAnswer, PreferencePair, build_dataset

if TYPE_CHECKING:
    from storage import Store

FORMATS = ("trl-pairs", "kto", "raw")


def pair_record(pair: PreferencePair, split: str) -> dict[str, Any]:
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "source": pair.source,
        "user_id": pair.user_id,
        "conversation_id": pair.conversation_id,
        "chosen_version": pair.chosen_version,
        "rejected_version": pair.rejected_version,
        "source_ids": list(pair.source_ids),
        "message_ids": list(pair.message_ids),
        "split": split,
    }


def kto_record(example: LabeledAnswer, split: str) -> dict[str, Any]:
    return {
        "prompt": example.prompt,
        "completion": [{"role": "assistant", "content": example.completion}],
        "label": example.label,
        "weight": example.weight,
        "source": example.source,
        "user_id": example.user_id,
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
    user_share_cap: float = 0.2,
    seed: int = 0,
) -> tuple[int, DataReport | None]:
    """Write the store's examples (or, for `raw`, its tables) to `out`; returns how many
    lines were written and, for the example formats, the data report."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "raw":
        rows = ({"table": t, **row} for t in store.data_tables() for row in store.table_rows(t))
        return write_jsonl(rows, out), None
    data = build_dataset(
        store, heldout_fraction=heldout_fraction, user_share_cap=user_share_cap, seed=seed
    )
    if fmt == "trl-pairs":
        records = [pair_record(p, "train") for p in data.train_pairs]
        records += [pair_record(p, "heldout") for p in data.heldout_pairs]
    else:
        records = [kto_record(e, "train") for e in data.train_unpaired]
        records += [kto_record(e, "heldout") for e in data.heldout_unpaired]
    return write_jsonl(records, out), data.report
