"""The trainer under torchrun with 2 CPU processes (DistributedDataParallel over gloo)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from torch import nn
    torch.set_num_threads(1)
    from lightfer.models.registry import PretrainedCfg
    from lightfer.train import main
    from lightfer.train.config import config_from_dict
    import torch.distributed as dist

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(16, 7)
            self.pretrained_cfg = PretrainedCfg(input_size=32, classes=tuple(f"c{i}" for i in range(7)))
        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    out = sys.argv[1]
    torch.manual_seed(int(os.environ["RANK"]))  # different init per rank: DDP must broadcast rank 0's
    cfg = config_from_dict({"epochs": 2, "batch_size": 32, "output_dir": out, "progress": False, "seed": 5,
                            "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
                            "data": {"synthetic_size": 512}})
    net = Net()
    res = main(cfg, model=net)
    torch.save({"world": dist.get_world_size(), "res": res, "state": net.state_dict()},
               os.path.join(out, f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=False)
    r1 = torch.load(out / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["state"].items():  # rank 0's init was broadcast and every update all-reduced
        if "running" not in k and "num_batches" not in k:  # BN statistics stay per process
            assert torch.equal(v, r1["state"][k]), k
    saved = torch.load(out / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in r0["state"].items())
    # metrics are all-reduced: both ranks report the same numbers
    assert r0["res"]["best_acc"] == r1["res"]["best_acc"] > 0.3  # chance = 1/7
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # written once (rank 0), not twice
    assert r0["res"]["last"]["train_acc"] == pytest.approx(float(rows[1]["train_acc"]))
