"""``lightfer eval``: score an expression model on a dataset split, or the face detector on WIDER FACE."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lightfer.cli.common import set_threads
from lightfer.defaults import PRECISIONS

if TYPE_CHECKING:
    from lightfer.data import FERDataset

EPILOG = """examples:
  lightfer eval fer_mini_xception --data fer2013:/data/fer2013.csv.gz --split test
  lightfer eval fer_mini_xception --data fer2013:/data/fer2013.csv.gz --split val,test --tta --out reports/mini
  lightfer eval runs/train/best.pt --data ferplus:/data/fer2013.csv.gz,/data/fer2013new.csv --split test
  lightfer eval shufflenet_v2_x1_0 --weights my.safetensors --data cache:crops/fer64 --split test
  lightfer eval runs/b/best.pt --compare runs/a/best.pt --data cache:crops/fer64 --split test   # paired test
  lightfer eval runs/b/best.pt --data cache:crops/fer64 --compare fer_mini_xception --compare-data cache:crops/box48
  lightfer eval shufflenet_v2_x1_0_fer2013 --no-tta --compare shufflenet_v2_x0_5_fer2013 --compare-tta \
      --data cache:crops/fer64 --split val                          # each model at its own serving cost
  lightfer eval shufflenet_v2_x1_0_fer2013 --backend onnx --data cache:crops/fer64 --split test   # as served (int8)
  lightfer eval --detector --data wider:/data/wider_face_val_subset --out reports/det
prints a table (accuracy, UAR, macro/weighted P/R/F1, one-vs-rest AUC, per-class figures, confusion
matrix, params, FLOPs, latency per face) per split; --compare adds a paired line (both models on the same
samples: accuracy difference with its 95% interval, samples only one of them gets right, exact McNemar
p); with --out writes report.json (keyed by split when several are given) and confusion[_SPLIT].png there.
Dataset specs: see `docs/data_eval.md` (fer2013, ferplus, folder, rafdb, affectnet, ckplus, cache)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` verb."""
    p = sub.add_parser(
        "eval",
        help="evaluate an expression model on a dataset (or the face detector on WIDER FACE)",
        description="Evaluate a registered model or a training checkpoint on a dataset split.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", metavar="CHECKPOINT_OR_MODEL",
                   help="training checkpoint file or registered model name")
    p.add_argument("--data", required=True, metavar="SPEC", help="dataset spec (wider:DIR with --detector)")
    p.add_argument("--split", default="test",
                   help="split(s) to evaluate, comma-separated: train, val, test or all (default test)")
    p.add_argument("--weights", help="safetensors / .pt state dict for a registered model name")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the horizontally mirrored crop (default: the model's pretrained_cfg.tta_flip)")
    p.add_argument("--compare", metavar="CHECKPOINT_OR_MODEL",
                   help="a second model (same classes) scored on the same samples: paired difference and McNemar "
                        "test; it uses its own default TTA unless --tta / --no-tta or --compare-tta / "
                        "--compare-no-tta is given")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--compare-tta", dest="compare_tta", action="store_const", const=True, default=None,
                   help="flip TTA for the --compare model alone (overrides --tta / --no-tta for it), e.g. to "
                        "compare two models at their serving cost: one with TTA, one without")
    g.add_argument("--compare-no-tta", dest="compare_tta", action="store_const", const=False,
                   help="no flip TTA for the --compare model alone")
    p.add_argument("--compare-data", metavar="SPEC",
                   help="the --compare model reads this dataset instead (the same samples in the same order with "
                        "other crops, e.g. box crops for fer_mini_xception or another crop size); checked by "
                        "labels and sample ids")
    p.add_argument("--no-ema", action="store_true",
                   help="a training checkpoint: score the live weights of its saved epoch instead of their EMA "
                        "(the --compare model keeps its EMA)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="score in PyTorch (float32) or in ONNX Runtime as served (both models with --compare)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="--backend onnx: 'auto' takes a model's shipped int8 quantisation where it has one and either "
                        "the file has 7-bit weights or the CPU has 8-bit dot products (VNNI, Arm dotprod)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, help="only the first N samples (smoke runs)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--onnx-latency", action="store_true", help="also time the model in ONNX Runtime")
    p.add_argument("--threads", type=int, help="CPU threads (set once for the process)")
    p.add_argument("--out", metavar="DIR", help="write report.json and confusion.png here")
    p.add_argument("--json", metavar="FILE", help="write the JSON report to FILE ('-' = stdout)")
    g = p.add_argument_group("detector")
    g.add_argument("--detector", action="store_true", help="score the face detector on a WIDER-format folder")
    g.add_argument("--det-backend", choices=["onnx", "torch"], default="onnx")
    g.add_argument("--det-score", type=float, default=0.5, help="operating threshold for recall / precision")
    p.set_defaults(func=run)


def _emit(report: dict, table: str, args: argparse.Namespace) -> None:
    from lightfer.eval.report import write_json

    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.out:
        path = write_json(report, Path(args.out) / "report.json")
        print(f"report: {path}", file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        from lightfer.eval.report import _jsonable

        json.dump(_jsonable(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.json:
        write_json(report, args.json)


def _run_detector(args: argparse.Namespace) -> int:
    from lightfer.detection import FaceDetector
    from lightfer.eval.detection import evaluate_detector

    kind, _, root = args.data.partition(":")
    if kind != "wider" or not root:
        print(f"error: --detector needs --data wider:DIR, got {args.data!r}", file=sys.stderr)
        return 2
    det = FaceDetector(args.det_backend, threads=args.threads, score_threshold=0.02)
    try:
        r = evaluate_detector(det.detect, root, operating_threshold=args.det_score, limit=args.limit,
                              progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    r["detector"] = {"model": "RetinaFace MobileNet-0.25", "backend": args.det_backend, "nms_iou": det.cfg.nms_iou,
                     "max_size": det.cfg.max_size}
    lines = [f"WIDER-format {root}: {r['images']} images, {r['valid_faces']} valid faces "
             f"({r['ignored_faces']} invalid ignored)",
             f"AP@0.5 {100 * r['ap']:.2f}%   max recall {100 * r['recall_max']:.2f}%   "
             f"at score>={r['operating_threshold']}: recall {100 * r['recall']:.2f}%  precision {100 * r['precision']:.2f}%",
             "recall by face height: " + ", ".join(f"{k} {100 * v['recall']:.1f}% (n={v['faces']})"
                                                   for k, v in r["recall_by_height"].items() if v["recall"] is not None),
             "recall by event: " + ", ".join(f"{k} {100 * v['recall']:.1f}%" for k, v in r["recall_by_event"].items()),
             f"{r['ms_per_image']:.1f} ms/image ({args.det_backend})"]
    _emit(r, "\n".join(lines), args)
    return 0


def _load_split(spec: str, split: str, limit: int | None) -> FERDataset:
    """One split of a dataset spec (``all`` = every sample), cut to its first ``limit`` samples if given."""
    from lightfer.data import build_dataset

    ds = build_dataset(spec, None if split == "all" else split)
    return ds.subset(range(min(limit, len(ds)))) if limit else ds


def run(args: argparse.Namespace) -> int:
    """Evaluate; returns 1 on a data / model error, 2 on a usage error."""
    set_threads(args.threads)
    if args.detector:
        return _run_detector(args)
    if not args.model:
        print("error: give a checkpoint or model name (or --detector)", file=sys.stderr)
        return 2
    for flag, given in (("--compare-data", args.compare_data), ("--compare-tta / --compare-no-tta",
                                                                 args.compare_tta is not None)):
        if given and not args.compare:
            print(f"error: {flag} needs --compare", file=sys.stderr)
            return 2
    from lightfer.eval.evaluate import evaluate_classifier, load_classifier
    from lightfer.eval.report import format_table, plot_confusion

    splits = [x.strip() for x in args.split.split(",") if x.strip()]
    if not splits:
        print("error: --split is empty", file=sys.stderr)
        return 2
    reports, tables = {}, []
    try:
        model = load_classifier(args.model, args.weights, use_ema=not args.no_ema)
        tta = bool(model.pretrained_cfg.tta_flip if args.tta is None else args.tta)
        other = load_classifier(args.compare) if args.compare else None
        tta_other = False
        if other is not None:
            tta_other = args.compare_tta if args.compare_tta is not None else args.tta
            tta_other = bool(other.pretrained_cfg.tta_flip if tta_other is None else tta_other)
        cost = None
        for split in splits:
            ds = _load_split(args.data, split, args.limit)
            ds_other = (_load_split(args.compare_data, split, args.limit)
                        if other is not None and args.compare_data else None)
            r = evaluate_classifier(model, ds, batch_size=args.batch_size, tta_flip=tta,
                                    latency=not args.no_latency and cost is None, onnx_latency=args.onnx_latency,
                                    compare=other, compare_tta=tta_other, compare_dataset=ds_other,
                                    backend=args.backend, precision=args.precision)
            cost = r["cost"] = cost or r["cost"]  # measured once per run
            r["data"], r["split"] = args.data, split
            if other is not None:
                r["compare"]["model_b"] = args.compare
                r["compare"]["data_b"] = args.compare_data or args.data
            title = (f"{r['model']} on {r['dataset']} ({r['evaluated']} of {r['dataset_size']} samples"
                     f"{', flip TTA' if tta else ''}"
                     f"{', ONNX Runtime ' + r['precision'] if args.backend == 'onnx' else ''})")
            if args.out:
                name = "confusion.png" if len(splits) == 1 else f"confusion_{split}.png"
                r["confusion_png"] = str(plot_confusion(r["confusion_matrix"], r["classes"], Path(args.out) / name,
                                                        title=title))
            reports[split] = r
            tables.append(format_table(r, title))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report = reports[splits[0]] if len(splits) == 1 else {"splits": reports}
    _emit(report, "\n\n".join(tables), args)
    return 0
