"""Quantise a shipped model to int8 for ONNX Runtime and ship the file beside its weights, with its accuracy.

    python scripts/ship_int8.py shufflenet_v2_x1_0_fer2013 --data cache:crops/fer64a0

Calibrates on --num crops of --calib-split (the training crops), then scores the int8 model as served
(ONNX Runtime, the model's own TTA setting unless --tta / --no-tta) on --eval-splits and records those figures
with the calibration under ``int8`` in the model's .json (lightfer.models.shipped.ship_int8).

With ``--check-data`` (e.g. ``fer2013:../shared/data/fer2013/fer2013.csv.gz``) it also records
``provenance.check_int8``: the correct predictions of the int8 file on the first ``--check-limit`` test images through
``lightfer prepare`` + ``lightfer eval --precision int8`` as a user runs them (lightfer.models.shipped.reproduction_check).
The test suite re-runs it with 1% slack on CPUs that serve int8 files (8-bit dot products), and on every CPU for a file
made with ``--reduce-range`` (7-bit weights: AVX2's kernels cannot saturate, so it scores the same everywhere).
Without ``--reduce-range`` ONNX Runtime's int8 kernels differ between CPUs (a few images in 500 between VNNI machines,
many points on AVX2), so record such a check on a CPU with 8-bit dot products.
"""
from __future__ import annotations

import argparse
import json
import logging

import torch


def main() -> None:
    """Parse the arguments, quantise, evaluate, record."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="a shipped model (lightfer/weights/NAME.json)")
    ap.add_argument("--data", required=True, help="dataset spec of the model's crops, e.g. cache:crops/fer64a0")
    ap.add_argument("--calib-split", default="train")
    ap.add_argument("--num", type=int, default=512, help="calibration crops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-splits", default="val,test", help="splits to score the int8 model on ('' = none)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check-data", help="dataset spec of the int8 reproduction check (provenance.check_int8)")
    ap.add_argument("--check-limit", type=int, default=500, help="images of the test split in the check")
    ap.add_argument("--reduce-range", action="store_true",
                    help="7-bit weights: the same accuracy on CPUs without 8-bit dot products (AVX2), see quantize_int8")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    from lightfer.data import build_dataset
    from lightfer.eval.evaluate import evaluate_classifier
    from lightfer.models import create_model, shipped

    path = shipped.ship_int8(args.name, args.data, split=args.calib_split, num=args.num, seed=args.seed,
                             reduce_range=args.reduce_range)
    model = create_model(args.name, pretrained=True)
    tta = bool(model.pretrained_cfg.tta_flip if args.tta is None else args.tta)
    evaluation = {}
    for split in [s for s in args.eval_splits.split(",") if s]:
        r = evaluate_classifier(model, build_dataset(args.data, split), tta_flip=tta, latency=False, backend="onnx",
                                precision="int8")  # the int8 file, whatever this CPU would serve by default
        if r["precision"] != "int8":
            raise SystemExit(f"{args.name}: ONNX Runtime did not take the int8 file")
        evaluation[f"{split}_{r['evaluated']}"] = {"accuracy": round(r["accuracy"], 4), "uar": round(r["uar"], 4),
                                                    "tta_flip": tta}
        print(f"{args.name} int8 on {args.data} [{split}]: accuracy {r['accuracy']:.2%}, UAR {r['uar']:.2%}")
    meta_path = path.with_name(f"{args.name}.json")
    meta = json.loads(meta_path.read_text())
    meta["int8"]["evaluation"] = {**evaluation, "command": f"lightfer eval {args.name} --backend onnx --precision int8 --data "
                                                         f"{args.data} --split {args.eval_splits}"}
    if args.check_data:
        check = shipped.reproduction_check(args.name, args.check_data, limit=args.check_limit, precision="int8")
        meta["provenance"]["check_int8"] = {k: check[k] for k in ("data", "split", "limit", "correct", "precision")}
        print(f"{args.name} int8 check: {check['correct']} / {check['limit']} correct on {check['data']} "
              f"{check['split']}")
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {path} and its record in {meta_path}")


if __name__ == "__main__":
    main()
