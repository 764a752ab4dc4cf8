"""What one of two processes does in tests/test_distributed.py: kept apart from the test
module so that each spawned process imports only torch and trainer.distributed."""

import json
import os
from pathlib import Path

import torch
from torch import nn

from trainer import distributed
from trainer.errors import TrainingError, TrainingSkipped


def _fail_on_main():
    raise ValueError("no such prompt")


def _skip_on_main():
    raise TrainingSkipped("3 pairs, 8 needed")


def helpers_in_process(index, port, out_dir):
    """One of two processes joined over gloo, as a launcher would start them."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(index),
        LOCAL_RANK=str(index),
    )
    distributed.start()
    seen = {"decision": distributed.on_main(lambda: f"decided by {distributed.rank()}")}
    for step in (_skip_on_main, _fail_on_main):
        try:
            distributed.on_main(step)
        except Exception as exc:
            seen[step.__name__] = f"{type(exc).__name__}: {exc}"
    seen["means"] = distributed.mean_across({"kl": float(index), "reward": 4.0 * index})
    torch.manual_seed(index)  # different starting weights: DDP must begin from rank 0's
    model = nn.Linear(3, 1)
    wrapped = distributed.data_parallel(model)  # kept: its hooks die with it
    wrapped(torch.full((2, 3), index + 1.0)).sum().backward()
    seen["grad"] = model.weight.grad.tolist()
    distributed.check_in_sync(model)
    seen["checksum"] = distributed.checksum(model)
    if index == 1:
        with torch.no_grad():
            model.bias.add_(1.0)
    try:
        distributed.check_in_sync(model)
    except TrainingError as exc:
        seen["drift"] = str(exc).split(":")[0]
    distributed.stop()
    (Path(out_dir) / f"{index}.json").write_text(json.dumps(seen))
