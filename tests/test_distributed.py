"""Data-parallel training: the helpers with one process and with two joined over gloo,
and one cycle launched as two CPU processes with the README's `accelerate launch`."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from storage import Store
from tests.distributed_worker import helpers_in_process
from tests.test_loop_e2e import tiny_loop_env
from tests.test_reward import add_marker_battles
from trainer import distributed


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7])
def test_shards_are_disjoint_cover_everything_and_balanced(n, count):
    items = [f"prompt {i}" for i in range(n)]
    shares = [distributed.shard(items, index, count) for index in range(count)]
    assert sorted(items) == sorted(x for share in shares for x in share)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_one_process_keeps_every_prompt_in_order():
    items = ["a", "b", "c"]
    assert items == distributed.shard(items, 0, 1)
    with pytest.raises(ValueError, match="not in 0..1"):
        distributed.shard(items, 2, 2)


def test_without_a_launcher_every_helper_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    module = nn.Linear(2, 1)
    values = {"kl": 0.25, "reward": -1.0}
    assert (1, 0, True) == (distributed.world_size(), distributed.rank(), distributed.is_main())
    assert values is distributed.mean_across(values)
    assert module is distributed.data_parallel(module)
    assert 3 == distributed.on_main(lambda a, b: a + b, 1, b=2)
    with pytest.raises(KeyError):  # the step's own error, not a wrapped one
        distributed.on_main(dict().__getitem__, "missing")
    distributed.start()  # no launcher: no process group
    assert not torch.distributed.is_initialized()
    assert "cuda" == distributed.local_device("cuda")


def test_under_a_launcher_cuda_means_this_process_s_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ("cuda:1", "cuda:0", "cpu") == tuple(
        distributed.local_device(d) for d in ("cuda", "cuda:0", "cpu")
    )


def test_the_checksum_sees_trainable_weights_and_extras_only():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    module[0].requires_grad_(False)
    before = distributed.checksum(module, 0.05)
    with torch.no_grad():
        module[0].weight.add_(1.0)  # frozen: not part of what must agree
    assert before == distributed.checksum(module, 0.05)
    assert before != distributed.checksum(module, 0.06)
    with torch.no_grad():
        module[1].bias.add_(1e-6)
    assert before != distributed.checksum(module, 0.05)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes importing torch: over 20 s on a loaded 2-core CPU
def test_helpers_across_two_processes(tmp_path):
    mp.start_processes(
        helpers_in_process, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    main, other = (json.loads((tmp_path / f"{i}.json").read_text()) for i in (0, 1))
    assert "decided by 0" == main["decision"] == other["decision"]
    assert "TrainingSkipped: 3 pairs, 8 needed" == main["_skip_on_main"] == other["_skip_on_main"]
    assert "ValueError: no such prompt" == main["_fail_on_main"]  # the main one's own error
    assert (
        "MainProcessFailed: the main process failed: ValueError: no such prompt"
        == other["_fail_on_main"]
    )
    assert {"kl": 0.5, "reward": 2.0} == main["means"] == other["means"]
    # d/dw of the summed outputs is 2x per process: (2 * 1 + 2 * 2) / 2 averaged
    assert [[3.0, 3.0, 3.0]] == main["grad"] == other["grad"]
    assert main["checksum"] == other["checksum"]
    assert "the processes' weights drifted apart" == main["drift"] == other["drift"]


@pytest.mark.slow
def test_two_processes_train_one_cycle_and_publish_once(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "chat.db")
    add_marker_battles(store, 24)
    store.close()
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",  # the GPU command; without CUDA the processes join over gloo
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "app",
        "train",
        "--once",
        "--force",
        "--data-dir",
        str(tmp_path),
    ]
    env = {**os.environ, **tiny_loop_env(tiny_model_dir), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    out = done.stdout + done.stderr
    assert 0 == done.returncode, out[-6000:]
    print(f"two-process cycle: {seconds:.1f}s")

    store = Store(tmp_path / "chat.db")
    try:
        runs = sorted((r.kind, r.status) for r in store.runs())
        assert [("cycle", "succeeded"), ("ppo", "succeeded"), ("reward", "succeeded")] == runs
        cycle = store.runs("cycle")[0]
        assert "promoted" == cycle.metrics["outcome"]
        assert ["base", "v1"] == [v.name for v in store.versions("policy")]
        assert ("v1", 1) == (store.live_version().name, len(store.versions("reward")))
        ppo = store.runs("ppo")[0]
        assert 2 * 4 == ppo.n_examples  # one round of 4 prompts in each process
        assert {1} == {step for series in store.run_metrics(ppo.id).values() for step, _ in series}
        train_prompts = store.run_metrics(cycle.id)["train_prompts"][0][1]
    finally:
        store.close()
    assert 1 == out.count("cycle 1: promoted v1")  # the summary comes from the main process

    shares = dict(re.findall(r"process (\d) of 2: (\d+) prompts in its share", out))
    assert {"0", "1"} == set(shares) and train_prompts == sum(map(int, shares.values()))
    sums = dict(re.findall(r"process (\d) of 2: trainable weights sha256 ([0-9a-f]{64})", out))
    assert {"0", "1"} == set(sums) and 1 == len(set(sums.values())), sums
