"""``lightfer train``: train or distill an expression classifier from a YAML recipe."""
from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG = """examples:
  lightfer train configs/smoke.yaml                                # ~1-minute synthetic run (checks the set-up)
  lightfer train configs/smoke.yaml --set epochs=3 optim.lr=0.05   # override any key
  lightfer train configs/seed001_teacher.yaml --set data.limit_train=2000 epochs=1
  lightfer train configs/seed001_kd.yaml --stop-after 10          # first 10 epochs of the 150-epoch schedule
  lightfer train configs/seed001_kd.yaml --resume                  # continue from output_dir/last.pt
  lightfer train configs/seed001_kd.yaml --time-budget 30          # as many epochs as fit in 30 min, full cosine
  lightfer train configs/seed003_swin_se_sam.yaml --print-config   # show the resolved config and exit
  torchrun --nproc_per_node 2 $(which lightfer) train configs/smoke.yaml   # DDP (gloo on CPU)

outputs in output_dir: config.yaml (resolved), last.pt, best.pt, log.csv (one row per epoch) and, with loss.fpdls,
fpdls_prior.txt (the prior as used)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser(
        "train", help="train / distill a classifier from a YAML config",
        description="Train an expression classifier (supervised, logit KD or manifold distillation) from a "
                    "YAML recipe; every key can be overridden with --set; unknown keys are errors.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML recipe (see configs/)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, dotted (optim.lr=0.1 loss.task=kd); values are YAML")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from output_dir/last.pt (or the given checkpoint) with identical results")
    p.add_argument("--output", help="shortcut for --set output_dir=DIR")
    p.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop once this epoch is done (time-boxed sessions); --resume later continues the same schedule")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="fit the run into this many minutes (set-up included): after the first epoch the schedule "
                        "is shortened to the epochs that fit at its pace (its first tenth of steps left out as warm-up), as if "
                        "the config had said so "
                        "(with a 1-epoch warm-up the cosine is then exactly the shorter one's); a schedule of 10 or "
                        "more epochs is fitted once more after epoch 3 at the pace of epochs 2-3 (at most the "
                        "config's epochs); an epoch that would still overrun is not started. --resume keeps the "
                        "fitted length")
    p.add_argument("--fit-share", type=float, default=1.0, metavar="F",
                   help="with --time-budget: fit the schedule into this share of the time left after the first "
                        "epoch (default 1.0); e.g. 0.9 where runs share a machine and the first epoch's pace may be "
                        "optimistic, so a slower pace still ends the fitted schedule inside the budget")
    p.add_argument("--threads", type=int, help="torch CPU threads for this process (default: torch's choice)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, print a JSON summary; exit code 2 for config/data errors."""
    import yaml

    from lightfer.train.config import ConfigError, config_to_dict, load_config

    overrides = list(args.overrides) + ([f"output_dir={args.output}"] if args.output else [])
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"lightfer train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    import torch

    from lightfer.train.checkpoint import CheckpointError
    from lightfer.train.engine import main

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        summary = main(cfg, resume=args.resume, stop_after=args.stop_after,
                       time_budget=args.time_budget * 60 if args.time_budget else None, fit_share=args.fit_share)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"lightfer train: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2, default=str))
    return 0
