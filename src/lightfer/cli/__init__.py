"""The ``lightfer`` command: one verb per module in this package.

Each verb module defines ``register(subparsers) -> None`` (adds its parser, with
``set_defaults(func=run)``) and ``run(args) -> int`` (the exit code). Add a verb by
writing its module and naming it in ``VERBS``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

VERBS: tuple[str, ...] = (
    "predict",
    "classify",
    "benchmark",
    "fetch",
    "export",
    "serve",
    "models_cmd",
    "prepare",
    "eval_cmd",
    "train",
    "explain",
)

EPILOG = """examples:
  lightfer predict examples/group.jpg             # one summary line per image
  lightfer predict photos/ --json out.json --save-dir annotated/
  lightfer predict clip.mp4 --save-video out.mp4 --csv timeline.csv --summary people.json
  lightfer predict --camera 0                     # webcam, Ctrl-C to stop
  lightfer classify crops/*.png --json -          # images that are already face crops
  lightfer serve                                  # HTTP API + web page on http://127.0.0.1:8000/
  lightfer models                                 # expression models: params, FLOPs, latency
  lightfer eval fer_mini_xception --data fer2013:fer2013.csv.gz --split test
  lightfer train configs/smoke.yaml               # training / distillation recipes
  lightfer explain photo.jpg --out maps/          # Grad-CAM per face
  lightfer benchmark                              # per-stage CPU timings
run `lightfer VERB --help` for the options of each verb."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all verbs)."""
    parser = argparse.ArgumentParser(
        prog="lightfer",
        description="Find every face and tell its facial expression, fast on a CPU.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from lightfer import __version__

    parser.add_argument("--version", action="version", version=f"lightfer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"lightfer.cli.{verb}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lightfer`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (KeyError, FileNotFoundError, RuntimeError, ValueError) as e:  # user-facing: no traceback unless -v
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
