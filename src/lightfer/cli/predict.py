"""``lightfer predict``: detect every face in images / folders and classify its expression."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightfer.cli.common import (
    RecordSink,
    add_model_options,
    add_output_options,
    build_analyzer,
    safe_output_path,
    set_threads,
)
from lightfer.cli.video import VIDEO_EPILOG, add_video_arguments, run_video, wants_video

EPILOG = """examples:
  lightfer predict examples/group.jpg
  lightfer predict photos/ --json faces.json --save-dir annotated/
  lightfer predict a.jpg b.png --json - --quiet           # JSON on stdout
  lightfer predict big.jpg --max-size 1920 --min-face-size 24 --score-threshold 0.7
  lightfer predict photos/ --csv faces.csv --threads 2
exit code: 0 when every input was analysed, 1 when any failed (each failure is named on stderr).""" + VIDEO_EPILOG


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` verb."""
    p = sub.add_parser(
        "predict",
        help="find faces and classify their expressions",
        description="Detect every face (RetinaFace), align it and classify its expression. "
        "PATHs are image files (jpg/png/webp/bmp/tiff) or folders (searched recursively).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders, or one video file / stream URL")
    add_model_options(p)
    g = p.add_argument_group("detector")
    g.add_argument("--score-threshold", type=float, default=0.5, help="minimum face score (default 0.5)")
    g.add_argument("--nms-iou", type=float, default=0.4, help="NMS IoU threshold (default 0.4)")
    g.add_argument("--min-face-size", type=float, default=0.0, help="drop faces smaller than this many px")
    g.add_argument("--max-faces", type=int, default=None, help="keep at most this many faces per image")
    g.add_argument("--max-size", type=int, default=1280,
                   help="downscale images whose longer side exceeds this before detection (0 = never)")
    g.add_argument("--min-size", type=int, default=0,
                   help="upscale images whose longer side is below this before detection (0 = never)")
    add_output_options(p)
    p.add_argument("--save-dir", metavar="DIR", help="write annotated copies here (inputs are never overwritten)")
    add_video_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse every input; returns 1 when any failed."""
    if wants_video(args):
        return run_video(args)
    if not args.paths:
        print("error: give image files, folders, a video, or --camera N", file=sys.stderr)
        return 2
    set_threads(args.threads)
    from tqdm import tqdm

    from lightfer.draw import annotate
    from lightfer.io import list_images, read_image, write_image

    files = list_images(args.paths)
    if not files:
        print("error: no images found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    analyzer = build_analyzer(args)
    save_dir = Path(args.save_dir) if args.save_dir else None
    roots = {Path(p).resolve(): Path(p) for p in args.paths if Path(p).is_dir()}
    inputs = {f.resolve() for f in files}
    bar = tqdm(files, unit="img", disable=args.no_progress or len(files) < 2, file=sys.stderr, dynamic_ncols=True)
    sink = RecordSink(args, bar.write)
    for path in bar:
        rgb = None
        try:
            t0 = time.perf_counter()
            rgb = read_image(path)
            decode_ms = (time.perf_counter() - t0) * 1e3
            result = analyzer.analyze_array(rgb, source=str(path))
            result.timings = {"decode": decode_ms, **result.timings}
        except Exception as e:  # reported by name, the batch goes on
            from lightfer.structures import FrameResult

            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            result = FrameResult(source=str(path), error=msg)
        sink.add(result)
        if save_dir is not None and rgb is not None and result.ok:
            root = next((r for r in roots if r in path.resolve().parents), None)
            dest = safe_output_path(save_dir, path.resolve(), root, inputs)
            write_image(dest, annotate(rgb, result))
    return sink.finish(analyzer.classes)
