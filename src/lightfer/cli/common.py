"""Options and output writers shared by the image verbs (predict, classify)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, TextIO

from lightfer.defaults import DEFAULT_MODEL, PRECISIONS

_threads_set = False


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --backend, --threads, --device, --tta / --no-tta, --precision."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"expression model (see `lightfer models`; default {DEFAULT_MODEL})")
    g.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="inference engine: ONNX Runtime (CPU default) or PyTorch")
    g.add_argument("--device", default="cpu", help="torch device for --backend torch (e.g. cuda)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average each face with its mirror image (about twice the classify time); "
                   "default: as the model's published numbers were measured (tta_flip in its pretrained config)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="ONNX Runtime: 'auto' runs a model's shipped int8 quantisation where it has one and either the "
                   "file has 7-bit weights or the CPU has 8-bit dot products (VNNI, Arm dotprod), else float32; 'int8' insists; 'fp32' always float32 (--backend torch is always float32)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--json, --csv, --quiet, --no-progress."""
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="FILE", help="write a JSON array, one record per image ('-' = stdout)")
    g.add_argument("--csv", metavar="FILE", help="write a CSV table, one row per face ('-' = stdout)")
    g.add_argument("-q", "--quiet", action="store_true", help="no per-image summary lines")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_analyzer(args: argparse.Namespace, **overrides: Any) -> Any:
    """The :class:`~lightfer.pipeline.Analyzer` that the model and detector options of ``args`` describe."""
    from lightfer.pipeline import Analyzer

    options = dict(
        backend=args.backend, device=args.device, threads=args.threads, tta=args.tta,
        precision=getattr(args, "precision", "auto"), score_threshold=args.score_threshold,
        nms_iou=args.nms_iou, min_face_size=args.min_face_size, max_faces=args.max_faces,
        max_size=args.max_size, min_size=args.min_size,
    )
    return Analyzer(args.model, **{**options, **overrides})


def set_threads(n: int | None) -> None:
    """Set torch's CPU threads once per process (changing them later makes models much slower)."""
    global _threads_set
    if n is None or _threads_set:
        return
    import torch

    torch.set_num_threads(max(1, int(n)))
    _threads_set = True


def open_out(path: str) -> TextIO:
    """A text stream for ``path`` ('-' = stdout), parent folders created."""
    if path == "-":
        return sys.stdout
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", newline="", encoding="utf-8")


def write_json(path: str, records: list[dict[str, Any]]) -> None:
    """Write records as one JSON array (atomically for files)."""
    if path == "-":
        json.dump(records, sys.stdout, indent=1)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    tmp.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)


CSV_HEAD = ["source", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence"]


def write_csv(path: str, records: Iterable[dict[str, Any]], classes: Iterable[str]) -> None:
    """One row per face (an image without faces or with an error gets one row with empty face fields)."""
    classes = list(classes)
    f = open_out(path)
    try:
        w = csv.writer(f)
        w.writerow(CSV_HEAD + [f"p_{c}" for c in classes] + ["error"])
        for rec in records:
            if not rec["faces"]:
                w.writerow([rec["source"]] + [""] * (len(CSV_HEAD) - 1 + len(classes)) + [rec.get("error") or ""])
            for i, face in enumerate(rec["faces"]):
                w.writerow([rec["source"], i, *face["box"], face["score"], face["label"], face["confidence"],
                            *[face["probs"].get(c, "") for c in classes], ""])
    finally:
        if f is not sys.stdout:
            f.close()


def summary_line(rec: dict[str, Any]) -> str:
    """``path: 3 faces: happy 97%, neutral 60%, …`` or the error."""
    if rec.get("error"):
        return f"{rec['source']}: ERROR {rec['error']}"
    faces = rec["faces"]
    parts = [f"{f['label']} {f['confidence'] * 100:.0f}%" if f["label"] else f"face {f['score']:.2f}" for f in faces]
    n = len(faces)
    return f"{rec['source']}: {n} face{'s' if n != 1 else ''}" + (": " + ", ".join(parts) if parts else "")


def safe_output_path(save_dir: Path, src: Path, root: Path | None, inputs: set[Path]) -> Path:
    """Where the annotated copy of ``src`` goes: mirrors its path under ``root``; never an input file."""
    rel = src.relative_to(root) if root is not None else Path(src.name)
    out = save_dir / rel
    if out.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp", ".bmp"):
        out = out.with_suffix(".png")
    if out.resolve() in inputs:
        out = out.with_name(f"{out.stem}_annotated{out.suffix}")
    return out


class RecordSink:
    """Collects per-image records: reports each (summary or error line), writes --json/--csv at the end."""

    def __init__(self, args: argparse.Namespace, write_line) -> None:
        self.args = args
        self.write_line = write_line  # e.g. tqdm's bar.write, so lines don't break the progress bar
        self.out = sys.stderr if args.json == "-" or args.csv == "-" else sys.stdout
        self.records: list[dict[str, Any]] = []
        self.failed = 0

    def add(self, result: Any) -> dict[str, Any]:
        """Record one :class:`~lightfer.structures.FrameResult`; returns its dict."""
        rec = result.to_dict()
        self.records.append(rec)
        if rec["error"]:
            self.failed += 1
            self.write_line(f"error: {rec['error']}", file=sys.stderr)
        elif not self.args.quiet:
            self.write_line(summary_line(rec), file=self.out)
        return rec

    def finish(self, classes: Iterable[str]) -> int:
        """Write the requested files, print the tally; returns the exit code (1 when anything failed)."""
        if self.args.json:
            write_json(self.args.json, self.records)
        if self.args.csv:
            write_csv(self.args.csv, self.records, classes)
        n_faces = sum(len(r["faces"]) for r in self.records)
        if not self.args.quiet or self.failed:
            print(f"{len(self.records) - self.failed}/{len(self.records)} images analysed, {n_faces} faces"
                  + (f", {self.failed} failed" if self.failed else ""), file=sys.stderr)
        return 1 if self.failed else 0
