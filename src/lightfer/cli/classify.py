"""``lightfer classify``: expression of images that are already face crops (no detection)."""
from __future__ import annotations

import argparse
import sys

from lightfer.cli.common import RecordSink, add_model_options, add_output_options, set_threads

EPILOG = """examples:
  lightfer classify face.png
  lightfer classify crops/ --json - --quiet
  lightfer classify crops/*.jpg --csv probs.csv --model fer_mini_xception
each image is taken whole as one face (box = the full image, no landmarks, score 1) and
resized to the model's input; the JSON has the same schema as `lightfer predict`."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``classify`` verb."""
    p = sub.add_parser(
        "classify",
        help="classify images that are already face crops",
        description="Classify the expression of face crops without running the detector.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="face-crop images or folders")
    add_model_options(p)
    add_output_options(p)
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every crop; returns 1 when any could not be read."""
    set_threads(args.threads)
    import numpy as np
    from tqdm import tqdm

    from lightfer.classifier import ExpressionClassifier
    from lightfer.io import ImageReadError, list_images, read_image
    from lightfer.structures import Face, FrameResult

    files = list_images(args.paths)
    if not files:
        print("error: no images found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    clf = ExpressionClassifier(args.model, backend=args.backend, device=args.device, threads=args.threads,
                               batch_size=args.batch_size, tta_flip=args.tta, precision=args.precision)
    bar = tqdm(total=len(files), unit="img", disable=args.no_progress or len(files) < 2, file=sys.stderr)
    sink = RecordSink(args, bar.write)
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        crops, results = [], []
        for path in chunk:
            try:
                crops.append(read_image(path))
                results.append(FrameResult(source=str(path), image_size=crops[-1].shape[1::-1]))
            except ImageReadError as e:
                results.append(FrameResult(source=str(path), error=str(e)))
        probs = iter(clf.predict(crops))
        for res, crop in zip((r for r in results if r.ok), crops):
            p = next(probs)
            h, w = crop.shape[:2]
            res.faces = [Face(box=np.array([0, 0, w, h], np.float32), score=1.0, landmarks=np.zeros((0, 2), np.float32),
                              label=clf.classes[int(p.argmax())], probs={c: float(v) for c, v in zip(clf.classes, p)})]
        for res in results:
            sink.add(res)
        bar.update(len(chunk))
    bar.close()
    return sink.finish(clf.classes)
