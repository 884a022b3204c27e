#!/usr/bin/env python
"""Replay training steps from a checkpoint and print each step's gradient norm (diagnosing a collapsed run).

Resumes ``--checkpoint`` under ``--config`` exactly as ``lightfer train --resume`` would (same data order, RNG and
optimizer state) in a scratch output folder, runs ``--steps`` steps of the next epoch and prints every step's batch
size and total gradient norm, then the largest steps and the median. ``--terms`` adds, at the steps named, each loss
term's own gradient norm (CE, KD, MD, ...). ``--ema-as-model`` starts from the checkpoint's EMA weights instead of its
raw weights (the optimizer's momentum is still the checkpoint's): the way to look at a step taken from healthy
weights when the raw ones are already broken. Nothing is written to the run's own folder.

How it measures: with ``log_grad_norm`` the engine takes each step's norm from ``torch.nn.utils.clip_grad_norm_``
(at an infinite limit when ``optim.clip_grad`` is unset); this script turns that on, unsets the clip so every norm is
the unclipped one, and wraps the function to read the norm it returns.

    python scripts/grad_replay.py --config configs/fer2013_shufflenet_kdmd_long_cpu.yaml \\
        --checkpoint runs/fer2013_shufflenet_kdmd_long_collapsed_cpu/best.pt --ema-as-model --steps 224 \\
        --terms 0,223 --threads 2 --set data.drop_last=false     # the collapsed run's setting
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn


class _Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the run's config (YAML)")
    ap.add_argument("--checkpoint", required=True, help="a training checkpoint (last.pt / best.pt) to resume from")
    ap.add_argument("--steps", type=int, default=20, help="steps to replay (default 20)")
    ap.add_argument("--terms", default="", help="comma-separated steps at which to print each loss term's norm")
    ap.add_argument("--ema-as-model", action="store_true", help="start from the checkpoint's EMA weights")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, as for lightfer train (e.g. data.drop_last=false)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads, set once")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from lightfer.train import engine, tasks
    from lightfer.train.checkpoint import load_checkpoint, save_checkpoint
    from lightfer.train.config import load_config

    cfg = load_config(a.config, a.set)
    scratch = Path(tempfile.mkdtemp(prefix="grad_replay_"))
    cfg.output_dir, cfg.progress = str(scratch / "out"), False
    cfg.optim.clip_grad, cfg.log_grad_norm = None, True
    ck_path = a.checkpoint
    if a.ema_as_model:
        ck = load_checkpoint(a.checkpoint)
        if ck.get("ema") is None:
            raise SystemExit(f"{a.checkpoint}: no EMA weights in this checkpoint")
        ck["model"] = ck["ema"]
        ck_path = str(save_checkpoint(ck, scratch / "ema_as_model.pt"))
    term_steps = {int(s) for s in a.terms.split(",") if s.strip()}
    norms: list[tuple[float, int, int]] = []
    batch = {"size": 0, "step": 0}
    clip = nn.utils.clip_grad_norm_

    def measured(params, max_norm, *args, **kw):  # type: ignore[no-untyped-def]
        total = float(clip(params, max_norm, *args, **kw))
        step = len(norms)
        norms.append((total, step, batch["size"]))
        print(f"step {step:4d}  batch {batch['size']:4d}  grad norm {total:9.3f}", flush=True)
        if len(norms) >= a.steps:
            raise _Stop
        return torch.tensor(total)

    def wrap(cls: type) -> None:
        forward = cls.forward

        def traced(self, model, x, target, **kw):  # type: ignore[no-untyped-def]
            losses, logits = forward(self, model, x, target, **kw)
            batch["size"] = int(x.shape[0])
            if batch["step"] in term_steps:
                params = [p for p in model.parameters() if p.requires_grad]
                parts = []
                for name, value in losses.items():
                    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
                    parts.append(f"{name} {value.item():.4f} (grad {norm.item():.3f})")
                print(f"step {batch['step']:4d}  terms: " + ", ".join(parts), flush=True)
            batch["step"] += 1
            return losses, logits

        cls.forward = traced

    for cls in {c for c in vars(tasks).values() if isinstance(c, type) and issubclass(c, tasks.SupervisedTask)}:
        if "forward" in vars(cls):
            wrap(cls)
    nn.utils.clip_grad_norm_ = measured
    try:
        engine.main(cfg, resume=ck_path)
    except _Stop:
        pass
    if norms:
        top = sorted(norms, reverse=True)[:5]
        print("largest: " + ", ".join(f"step {s} (batch {b}): {n:.3f}" for n, s, b in top))
        print(f"median over {len(norms)} steps: {statistics.median(n for n, _, _ in norms):.3f}")


if __name__ == "__main__":
    main()
