"""``lightfer benchmark``: per-stage CPU timings of the pipeline (a command that prints figures)."""
from __future__ import annotations

import argparse
import json
import sys

from lightfer.defaults import DEFAULT_MODEL, PRECISIONS

EPILOG = """examples:
  lightfer benchmark                                  # bundled 640x480 4-face image, ONNX + torch, 1 and 2 threads
  lightfer benchmark --backends onnx --threads 1 --repeats 100
  lightfer benchmark --image my.jpg --json bench.json
  lightfer benchmark --video --backends onnx          # end-to-end video frames/s, synthetic 640x480 4-face clip
  lightfer benchmark --video clip.mp4 --threads 1 2 4
each configuration runs in a fresh process (torch threads are set once per process);
figures are medians after 3 warm-up runs."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` verb."""
    p = sub.add_parser(
        "benchmark",
        help="time each pipeline stage on the CPU",
        description="Milliseconds per stage (decode, detect, align, classify) and faces per second "
        "for the PyTorch and ONNX Runtime paths at several thread counts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", help="image to analyse (default: the bundled 640x480 four-face example)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="expression model")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="classify each face and its mirror (default: the model's own setting)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="ONNX Runtime classifier: a shipped int8 model where there is one and it has 7-bit weights or "
                   "the CPU has 8-bit dot products (auto), or fp32 / int8")
    p.add_argument("--backends", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to measure")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per configuration")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--video", nargs="?", const="", metavar="CLIP",
                   help="end-to-end video frames/s (tracking included) on CLIP, or on a synthetic 640x480 4-face clip")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    if args.video is not None:
        from lightfer.eval.video_bench import run_cli

        return run_cli(args.video or None, args.threads, args.backends, args.model, args.json)
    from pathlib import Path

    from lightfer.eval.benchmark import default_image, format_table, machine_info, run_all

    image = Path(args.image) if args.image else default_image()
    if not image.exists():
        print(f"error: {image}: no such file", file=sys.stderr)
        return 1
    rows = run_all(image, args.backends, args.threads, args.repeats, args.model, tta=args.tta,
                   precision=args.precision)
    info = machine_info()
    print(format_table(rows, info, image, args.repeats))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "image": str(image), "rows": rows}, indent=1))
    return 0
