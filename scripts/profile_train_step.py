#!/usr/bin/env python
"""Where a training step's time goes: one short epoch of a config per variant, its seconds per step, and (with
``--profile``) torch.profiler's top operators of the baseline.

Variants: the config as it is, without EMA (``ema_decay=null``), without batch augmentation, and without both. For a
lent GPU, where session 25 measured 40 ms per step for the 0.35M student (docs/training.md):

    python scripts/profile_train_step.py configs/fer2013_shufflenet_dlibkd_long_gpu.yaml --steps 60 --profile
"""
from __future__ import annotations

import argparse
import csv
import logging
import tempfile
from pathlib import Path

import torch

from lightfer.train.config import load_config
from lightfer.train.engine import main as train

NO_AUG = ["augment.hflip=0", "augment.crop_pad=0", "augment.rotate=0", "augment.erase=0"]


def run(config: str, sets: list[str], steps: int, out: Path) -> float:
    """Seconds per step of one epoch of ``steps`` steps (the epoch's first tenth included)."""
    cfg = load_config(config, sets + [f"output_dir={out}", "progress=false", "epochs=2"])
    cfg.data.limit_train = steps * cfg.batch_size
    cfg.data.limit_val = cfg.batch_size
    train(cfg, stop_after=2)
    rows = list(csv.DictReader((out / "log.csv").read_text().splitlines()))
    return float(rows[-1]["seconds"]) / steps  # the second epoch: no one-off warm-ups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", nargs="*", default=[], dest="sets", help="config overrides, key=value")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    variants = {"as configured": [], "no EMA": ["ema_decay=null"], "no augmentation": NO_AUG,
                "no EMA, no augmentation": ["ema_decay=null"] + NO_AUG}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, sets) in enumerate(variants.items()):
            ms = 1000 * run(a.config, a.sets + sets, a.steps, Path(tmp) / str(i))
            print(f"{name:28s} {ms:8.1f} ms per step", flush=True)
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            with profile(activities=acts) as prof:
                run(a.config, a.sets, a.steps, Path(tmp) / "prof")
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
            print(prof.key_averages().table(sort_by=key, row_limit=10))


if __name__ == "__main__":
    main()
