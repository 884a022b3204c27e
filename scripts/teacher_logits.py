#!/usr/bin/env python
"""Precompute an (ensemble) teacher's logits over a cached training split for logit KD.

The engine's ``teacher.logits_file`` holds one teacher's logits; this script writes the same file format
(``{"logits": (N, K) float32}``) for several teachers as the log of their mean probability, each member
optionally averaged over the horizontal flip first, and prints every member's and the ensemble's accuracy / UAR on the splits it is given.
A member is a registered model name with pretrained weights (``fer_mini_xception``) or a lightfer training
checkpoint (``runs/x/best.pt``).

    python scripts/teacher_logits.py --data cache:crops/fer64a0 --split train \
        --teacher fer_mini_xception --teacher runs/fer2013_minixception_ft/best.pt --flip \
        --out runs/teachers/mx2_flip_train_logits.pt --report val,test

``--logits-member FILE:WEIGHT`` adds a logits file this script wrote before (e.g. the dlib pair's) to the mean of the
written split with that weight (a pair file: 2, as if its members were listed again), so a mix does not recompute
its slow members. Such a member has no probabilities on the ``--report`` splits: it is left out there, and the
printed "ensemble" line of a report split is the mix without it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lightfer.data import build_dataset
from lightfer.eval.evaluate import align_labels, load_classifier, predict_probs
from lightfer.eval.metrics import confusion_matrix, metrics_from_confusion
from lightfer.train.checkpoint import save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset spec, e.g. cache:crops/fer64a0")
    ap.add_argument("--split", default="train", help="split whose logits are written")
    ap.add_argument("--teacher", action="append", required=True, help="model name or checkpoint (repeat)")
    ap.add_argument("--logits-member", action="append", default=[], metavar="FILE:WEIGHT",
                    help="a logits file of --split joined to the mean with this weight (repeat)")
    ap.add_argument("--flip", action="store_true", help="average each member over the horizontal flip")
    ap.add_argument("--out", required=True, help="logits file for teacher.logits_file")
    ap.add_argument("--report", default="", help="extra splits to print accuracy on, e.g. val,test")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads, set once (default: torch's choice, all cores)")
    ap.add_argument("--device", default="cpu", help="torch device of the teachers, e.g. cuda (default cpu)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    members = [load_classifier(t).to(a.device) for t in a.teacher]
    classes = tuple(members[0].pretrained_cfg.classes)
    if any(tuple(m.pretrained_cfg.classes) != classes for m in members):
        raise SystemExit("teachers disagree on class order; retrain or remap one of them")
    extra = [_logits_member(spec, classes) for spec in a.logits_member]
    for split in [a.split] + [s for s in a.report.split(",") if s]:
        ds = build_dataset(a.data, split)
        if len(ds.classes) != len(classes):
            raise SystemExit(f"{a.data} {split}: {len(ds.classes)} classes, the teachers have {len(classes)}")
        ds = align_labels(ds, classes)
        each = [predict_probs(m, ds.images, tta_flip=a.flip) for m in members]
        ens = np.mean(each, axis=0)
        for name, p in list(zip(a.teacher, each)) + [("ensemble", ens)]:
            _report(split, name, ds.labels, p)
        if split == a.split:
            if extra:
                for path, w, p in extra:
                    if p.shape != ens.shape:
                        raise SystemExit(f"{path}: logits {tuple(p.shape)}, {split} needs {ens.shape}")
                    _report(split, path, ds.labels, p, f" (weight {w:g})")
                total = len(each) + sum(w for _, w, _ in extra)
                ens = (ens * len(each) + sum(w * p for _, w, p in extra)) / total
                _report(split, "ensemble with the logits members", ds.labels, ens)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            logits = torch.from_numpy(np.log(np.clip(ens, 1e-8, None))).float()  # log of the mean probability
            save_checkpoint({"logits": logits, "num_samples": len(ds),
                             "teacher": "+".join(a.teacher + [f"{p_}:{w:g}" for p_, w, _ in extra]),
                             "flip": a.flip, "classes": list(classes)}, a.out)
            print(f"wrote {a.out}: {tuple(logits.shape)}")


def _report(split: str, name: str, labels: np.ndarray, probs: np.ndarray, suffix: str = "") -> None:
    """Print accuracy and UAR of (N, K) probabilities against (N,) labels."""
    m = metrics_from_confusion(confusion_matrix(labels, probs.argmax(1), probs.shape[1]))
    print(f"{split:5s} {name:55s} acc {m['accuracy']:.4f} uar {m['uar']:.4f}{suffix}")


def _logits_member(spec: str, classes: tuple[str, ...]) -> tuple[str, float, np.ndarray]:
    """``FILE:WEIGHT`` (weight 1 if left out) -> (file, weight, probabilities (N, K) float64) in the teachers'
    class order."""
    path, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    if not Path(path).is_file():
        raise SystemExit(f"--logits-member {spec}: no such file {path}")
    try:
        w = float(weight)
    except ValueError:
        raise SystemExit(f"--logits-member {spec}: weight {weight!r} is not a number") from None
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if tuple(blob.get("classes", classes)) != classes:
        raise SystemExit(f"--logits-member {path}: classes {blob['classes']}, the teachers have {list(classes)}")
    return path, w, torch.softmax(blob["logits"].double(), 1).numpy()


if __name__ == "__main__":
    main()
