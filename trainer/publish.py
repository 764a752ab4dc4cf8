"""Publishing a trained adapter as a model version, atomically.

The files are copied to `adapters/<name>.tmp`, fsynced, renamed to `adapters/<name>`
(a rename is atomic on one filesystem), and only then is the version row inserted,
in one transaction. A crash before the insert leaves at most a directory that no
row points to — invisible to serving, and removed by `remove_unpublished`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from storage import ModelVersion, Store

ADAPTERS = "adapters"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree_sha256(root: Path) -> str:
    """One digest over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def next_version_name(store: Store, prefix: str = "v") -> str:
    """v1, v2, … after the highest policy version number so far."""
    numbers = [
        int(v.name[len(prefix) :])
        for v in store.versions("policy")
        if v.name.startswith(prefix) and v.name[len(prefix) :].isdigit()
    ]
    return f"{prefix}{max(numbers, default=0) + 1}"


def publish_adapter(
    store: Store,
    adapter_dir: Path,
    data_dir: Path,
    name: str,
    *,
    parent: str | None,
    metrics: dict[str, Any] | None = None,
    status: str = "candidate",
) -> ModelVersion:
    """Copy `adapter_dir` into the data directory as version `name` and register it."""
    root = Path(data_dir) / ADAPTERS
    root.mkdir(parents=True, exist_ok=True)
    target, tmp = root / name, root / f"{name}.tmp"
    if target.exists():
        raise FileExistsError(f"{target} already exists; version names are never reused")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(adapter_dir, tmp)
    _fsync_tree(tmp)
    digest = tree_sha256(tmp)
    os.rename(tmp, target)
    _fsync_dir(root)
    return store.add_version(
        "policy",
        name,
        path=str(target),
        sha256=digest,
        parent=parent,
        status=status,
        metrics=metrics,
    )


def remove_unpublished(store: Store, data_dir: Path) -> list[Path]:
    """Delete adapter directories no version row points to (left by a crash)."""
    root = Path(data_dir) / ADAPTERS
    if not root.exists():
        return []
    known = {Path(v.path).resolve() for v in store.versions("policy") if v.path}
    removed = []
    for path in root.iterdir():
        if path.is_dir() and path.resolve() not in known:
            shutil.rmtree(path)
            removed.append(path)
    return removed
