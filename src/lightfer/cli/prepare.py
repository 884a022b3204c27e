"""``lightfer prepare``: detect + align every face of a dataset into a compact crop cache."""
from __future__ import annotations

import argparse
import sys
import time

from lightfer.cli.common import set_threads
from lightfer.defaults import DEFAULT_MODEL

EPILOG = """examples:
  lightfer prepare --data fer2013:/data/fer2013.csv.gz --out crops/fer64 --splits test
  lightfer prepare --data fer2013:/data/fer2013.csv.gz --out crops/fer64 --splits train,val,test --model fer_mini_xception
  lightfer prepare --data ferplus:/data/fer2013.csv.gz,/data/fer2013new.csv --out crops/ferplus112 --size 112 --margin 0.15
  lightfer prepare --data ferplus:/data/fer2013.csv.gz,/data/fer2013new.csv --out crops/ferplus64 --reuse crops/fer64
  lightfer prepare --data 'folder:/data/ckplus?split=all' --out crops/ck --splits all
  lightfer eval fer_mini_xception --data cache:crops/fer64 --split test      # evaluate on the cached crops
each split becomes DIR/<split>.npz (crops, labels, face_found, boxes, landmarks) and DIR/index.json
records the settings and the detection rate. Small images (e.g. 48x48) are upscaled x4 (bicubic)
and padded before detection; images without a detected face keep their own crop, resized.
Crop size, margin and mode (5-point alignment or box crop) default to the model's pretrained
config (--model), exactly as serving cuts faces for that model."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` verb."""
    p = sub.add_parser(
        "prepare",
        help="build a face-aligned crop cache of a dataset",
        description="Run the product's face detector and aligner over a dataset and cache the aligned crops.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="SPEC", help="dataset spec, e.g. fer2013:/path/fer2013.csv.gz")
    p.add_argument("--out", required=True, metavar="DIR", help="cache folder (created; splits are added to it)")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits (or 'all')")
    p.add_argument("--model", default=DEFAULT_MODEL, help="take crop size and margin from this model's config")
    p.add_argument("--size", type=int, help="crop side in px (overrides the model's)")
    p.add_argument("--margin", type=float, help="crop margin (overrides the model's)")
    p.add_argument("--mode", choices=["align", "box"], help="crop mode: 5-point alignment or square box crop "
                   "(overrides the model's crop_mode)")
    p.add_argument("--upscale", type=float, default=4.0, help="enlargement of small images before detection")
    p.add_argument("--small-side", type=int, default=160, help="images with a shorter side below this are upscaled")
    p.add_argument("--pad", type=float, default=0.25, help="padding per side, fraction of the (upscaled) image")
    p.add_argument("--border", choices=["replicate", "constant"], default="replicate", help="padding fill")
    p.add_argument("--score", type=float, default=0.5, help="detector score threshold")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx", help="detector engine")
    p.add_argument("--threads", type=int, help="CPU threads (torch and ONNX Runtime)")
    p.add_argument("--limit", type=int, help="only the first N images per split (smoke runs)")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="take the detections of images with the same id from this crop cache (repeatable; it must "
                   "have been detected with the same detector, upscale, pad and border): e.g. FER+ from a FER2013 "
                   "cache, which holds the same pixels. Other sizes, margins and modes are cut from them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the cache; prints the detection rate per split. Returns 1 on a data error."""
    set_threads(args.threads)
    from lightfer.data import build_dataset
    from lightfer.data.cache import CropSettings, load_detections, update_index, write_split
    from lightfer.detection import FaceDetector
    from lightfer.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(args.model)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    settings = CropSettings(size=args.size or cfg.input_size,
                            margin=cfg.crop_margin if args.margin is None else args.margin,
                            mode=args.mode or getattr(cfg, "crop_mode", "align"),
                            upscale=args.upscale, small_side=args.small_side, pad=args.pad, border=args.border)
    det_kwargs = {"backend": args.backend, "score_threshold": args.score}
    detector = FaceDetector(args.backend, threads=args.threads, score_threshold=args.score)
    try:
        reuse = load_detections(args.reuse, settings, det_kwargs) if args.reuse else None
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        try:
            ds = build_dataset(args.data, None if split == "all" else split)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if args.limit:
            ds = ds.subset(range(min(args.limit, len(ds))))
        t0 = time.perf_counter()
        try:
            entry = write_split(args.out, split, ds, detector.detect, settings, progress=not args.no_progress,
                                reuse=reuse)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        update_index(args.out, split, entry, dataset=ds, settings=settings, source=args.data,
                     model=args.model if args.size is None and args.margin is None and args.mode is None else None,
                     detector=det_kwargs)
        dt = time.perf_counter() - t0
        print(f"{split}: {entry['faces_found']}/{entry['count']} faces detected "
              f"({100 * entry['detection_rate']:.2f}%), {settings.size}px {settings.mode} crops, margin {settings.margin}, "
              f"{dt:.0f} s -> {args.out}/{entry['file']}")
    return 0
