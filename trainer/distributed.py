"""Data parallelism for a training cycle started by `accelerate launch` or `torchrun`.

A launcher starts N copies of `rlhf-chat train --once` with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. `start` joins them into one process
group; from then on:

- the main process (rank 0) alone reads and writes the store and the data directory,
  runs the gate, publishes and promotes; `on_main` runs such a step there and hands
  its result, or its failure, to every process, so all of them take the same branch;
- the reward model trains under TRL's trainer, which is data-parallel by itself;
- PPO samples, scores and trains on each process's own `shard` of the prompts, with
  gradients averaged by `data_parallel` (torch DDP) and the statistics that steer
  the run averaged by `mean_across`, so every process keeps the same weights and beta.

Without a process group (one process, the default) every helper here is the identity
and nothing is communicated: a single-process run computes exactly what it did.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from trainer.errors import TrainingError, TrainingSkipped

log = logging.getLogger(__name__)

T = TypeVar("T")

# Followers wait at a collective while the main process alone samples for the reward
# model's normalization or evaluates the policy; on a CPU that can take minutes.
TIMEOUT = timedelta(hours=1)


class MainProcessFailed(TrainingError):
    """Raised on the other processes when a step that runs on the main process fails."""


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as the launcher set it (RANK; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the running process group; 1 when there is none."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def is_main() -> bool:
    return rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_device(device: str) -> str:
    """`cuda` means this process's own GPU (LOCAL_RANK) under a launcher; anything more
    specific, and every other device, is kept as given."""
    if device == "cuda" and launched_processes() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def start(*, cuda: bool = False) -> None:
    """Join the launcher's process group (no-op with one process, or when joined).

    CPU tensors go over gloo; with `cuda` (a model on GPUs) each process also takes its
    own GPU and CUDA tensors go over NCCL. The group is created here rather than by
    accelerate's `PartialState`, which picks gloo only when told `cpu=True`; TRL's
    trainer, which builds a `PartialState` later, finds this group and uses it.
    """
    if launched_processes() <= 1 or dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    log.info("process %d of %d joined the training group (%s)", rank(), world_size(), backend)


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: T) -> T:
    """The main process's `value`, on every process (pickled; keep it small)."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on the main process; every process returns its result.

    A `TrainingSkipped` there is raised everywhere, so the others skip with it; any
    other exception is re-raised on the main process and raised on the others as
    `MainProcessFailed`, so no process is left waiting for a step that will not come.
    `fn` must not communicate: the others are waiting for this one broadcast.
    """
    if not _active():
        return fn(*args, **kwargs)
    if not is_main():
        outcome: tuple[bool, Any] = broadcast((False, None))  # replaced by the main one's
        ok, value = outcome
        if ok:
            return value
        kind, message = value
        if kind == "skipped":
            raise TrainingSkipped(message)
        raise MainProcessFailed(f"the main process failed: {message}")
    try:
        value = fn(*args, **kwargs)
    except TrainingSkipped as exc:
        broadcast((False, ("skipped", str(exc))))
        raise
    except Exception as exc:
        broadcast((False, ("failed", f"{type(exc).__name__}: {exc}")))
        raise
    broadcast((True, value))
    return value


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Process `index` of `count`'s share: every `count`-th item from `index` on. The
    shares are disjoint, cover `items` and differ in length by at most one."""
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is not in 0..{count - 1}")
    return list(items[index::count])


def mean_across(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes, in one collective; as given with one."""
    if not _active():
        return values
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(total)
    return {k: v / world_size() for k, v in zip(keys, total.tolist(), strict=True)}


def data_parallel(module: nn.Module) -> nn.Module:
    """A torch DDP wrapper whose backward averages gradients over the processes (the
    module itself with one). Call training forward passes through it; generation and
    no-grad scoring may keep using the module. DDP starts by copying rank 0's weights
    to the others."""
    if not _active():
        return module
    device = next(module.parameters()).device
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def checksum(module: nn.Module, *extra: object) -> str:
    """sha256 of the trainable parameters (by name) and of `extra` values, such as beta."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        if param.requires_grad:
            digest.update(name.encode())
            raw = param.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype
            digest.update(raw.numpy().tobytes())
    for value in extra:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def check_in_sync(module: nn.Module, *extra: object) -> None:
    """Raise unless every process holds the same trainable weights (and `extra`), so
    drifted processes are caught before the main one publishes its copy."""
    if not _active():
        return
    mine = checksum(module, *extra)
    log.info("process %d of %d: trainable weights sha256 %s", rank(), world_size(), mine)
    every: list[Any] = [None] * world_size()
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        raise TrainingError(f"the processes' weights drifted apart: {every}")
