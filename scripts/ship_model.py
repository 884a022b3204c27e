#!/usr/bin/env python
"""Ship a ``lightfer train`` checkpoint as a package model: ``src/lightfer/weights/<name>.safetensors`` + ``.json``.

Writes the pair with :func:`lightfer.models.shipped.ship_checkpoint` (preprocessing config, sha256, the provenance
read from ``--provenance``), then records ``provenance.check`` with
:func:`lightfer.models.shipped.reproduction_check`: the number of correct predictions on the first
``--check-limit`` images of the real test split, through ``lightfer prepare`` + ``lightfer eval`` as a user runs
them; the test suite re-runs that check whenever ``../shared/data`` is present.

    python scripts/ship_model.py runs/fer2013_shufflenet48_kd_cpu/best.pt shufflenet_v2_x0_5_fer2013_48 \\
        --description "ShuffleNetV2 x0.5 at 48 px, KD on FER2013 aligned crops" --provenance prov.json \\
        --no-tta --check-data fer2013:../shared/data/fer2013/fer2013.csv.gz

An ensemble ships the same way: give its members comma-separated as CHECKPOINT, each a checkpoint (its EMA),
``checkpoint@live`` (its live weights) or a shipped model name; the package model averages their probabilities:

    python scripts/ship_model.py runs/a/best.pt@live,runs/b/best.pt,shufflenet_v2_x0_5_fer2013 \
        shufflenet_v2_x0_5_fer2013_ens3 --description "..." --provenance prov.json --tta --check-data fer2013:PATH

``prov.json`` holds the provenance fields of the model card row (data, recipe, command, training_cost, the
measured metrics, and ``eval``: the ``lightfer eval <name> ...`` command that reproduces them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="lightfer train checkpoint (runs/<run>/best.pt), or comma-separated ensemble "
                                       "members (checkpoint, checkpoint@live, shipped model name)")
    ap.add_argument("name", help="registered name of the shipped model")
    ap.add_argument("--description", required=True, help="one line: what the model is and its headline figure")
    ap.add_argument("--provenance", required=True, help="JSON file with the provenance fields")
    ap.add_argument("--no-ema", action="store_true", help="ship the live weights of the saved epoch, not their EMA")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="serve with flip TTA (default: keep the checkpoint's setting)")
    ap.add_argument("--crop-mode", choices=["align", "box"], help="override the checkpoint's crop mode")
    ap.add_argument("--crop-margin", type=float, help="override the checkpoint's crop margin")
    ap.add_argument("--serve-size", type=int, help="serve crops of this side to a model trained on crops resized "
                                                    "to a larger input (it upsamples them itself: resample_to)")
    ap.add_argument("--fp16", action="store_true", help="store the weights in half precision (half the file)")
    ap.add_argument("--check-data", required=True, help="dataset spec of the check, e.g. fer2013:PATH")
    ap.add_argument("--check-limit", type=int, default=500, help="images of the test split in the check")
    a = ap.parse_args()

    from lightfer.models import shipped

    provenance = json.loads(Path(a.provenance).read_text())
    for key in ("command", "eval"):
        if key not in provenance:
            print(f"error: {a.provenance}: provenance needs {key!r}", file=sys.stderr)
            return 2
    members = [m for m in a.checkpoint.split(",") if m]
    if len(members) > 1:
        if a.no_ema or a.crop_mode or a.crop_margin is not None:
            print("error: an ensemble takes its members' crops; mark live weights as MEMBER@live, not --no-ema",
                  file=sys.stderr)
            return 2
        weights = shipped.ship_ensemble(members, a.name, description=a.description, provenance=provenance,
                                        tta_flip=a.tta)
    else:
        weights = shipped.ship_checkpoint(a.checkpoint, a.name, description=a.description, provenance=provenance,
                                          crop_mode=a.crop_mode, crop_margin=a.crop_margin, tta_flip=a.tta,
                                          use_ema=not a.no_ema, serve_size=a.serve_size, fp16=a.fp16)
    meta_path = weights.with_suffix(".json")
    check = shipped.reproduction_check(a.name, a.check_data, limit=a.check_limit, precision="fp32")
    meta = json.loads(meta_path.read_text())
    meta["provenance"]["check"] = {k: check[k] for k in ("data", "split", "limit", "correct", "precision")}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{weights} ({weights.stat().st_size / 1e6:.2f} MB); check: {check['correct']} / {check['limit']} "
          f"correct ({check['accuracy']:.2%}) on {check['data']} {check['split']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
