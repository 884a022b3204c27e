"""Face-detector scoring on a WIDER FACE-format folder (Yang et al., CVPR 2016): AP and recall at IoU 0.5.

Matching protocol (stated because the official WIDER tool differs -- it scores easy/medium/hard
subsets from ``.mat`` files that are not available here):

* ground-truth boxes ``x1 y1 w h`` become ``(x1, y1, x1 + w, y1 + h)``; boxes with ``invalid == 1``
  (and zero-size boxes) are *ignore* regions;
* per image, detections are taken in decreasing score; each is a true positive when its best IoU
  with a not-yet-matched valid box is >= 0.5 (that box becomes matched); otherwise it is ignored
  (neither TP nor FP) when it overlaps an ignore box with IoU >= 0.5; otherwise a false positive
  (duplicates of a matched face are false positives);
* AP: detections of all images pooled and sorted by score; all-point interpolated area under the
  precision-recall curve (VOC 2010+), recall over all valid boxes;
* recall / precision at the detector's operating threshold (default 0.5) and recall per face
  height bin and per event folder are reported too.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lightfer.data.fer2013 import MalformedFileError
from lightfer.detection.box_utils import box_iou

log = logging.getLogger(__name__)

SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("<16px", 0, 16), ("16-32px", 16, 32), ("32-64px", 32, 64), (">=64px", 64, float("inf")),
)


@dataclass
class GTImage:
    """Ground truth of one image: boxes ``(K, 4)`` x1, y1, x2, y2 and ``ignore (K,)`` bool."""

    path: str
    boxes: np.ndarray
    ignore: np.ndarray


def read_wider_gt(path: str | Path) -> list[GTImage]:
    """Parse ``wider_face_*_bbx_gt.txt`` (image path; count; ``x1 y1 w h blur expr illum invalid occl pose``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: WIDER ground-truth file not found")
    lines = path.read_text().splitlines()
    out: list[GTImage] = []
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        try:
            n = int(lines[i + 1])
        except (IndexError, ValueError):
            raise MalformedFileError(f"{path}:{i + 2}: expected the face count of {name}") from None
        rows = []
        for k in range(max(n, 1)):  # a 0-face image still has one all-zero line
            ln = i + 2 + k
            if ln >= len(lines):
                raise MalformedFileError(f"{path}:{ln + 1}: file ends inside the boxes of {name}")
            vals = lines[ln].split()
            if len(vals) < 4:
                raise MalformedFileError(f"{path}:{ln + 1}: expected 'x1 y1 w h ...', got {lines[ln]!r}")
            try:
                rows.append([float(v) for v in vals[:10]] + [0.0] * (10 - len(vals[:10])))
            except ValueError:
                raise MalformedFileError(f"{path}:{ln + 1}: non-numeric box values {lines[ln]!r}") from None
        arr = np.asarray(rows[:n] if n else [], np.float64).reshape(-1, 10)
        boxes = np.c_[arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]]
        ignore = (arr[:, 7] == 1) | (arr[:, 2] <= 0) | (arr[:, 3] <= 0)
        out.append(GTImage(name, boxes, ignore))
        i += 2 + max(n, 1)
    return out


def match_image(det: np.ndarray, scores: np.ndarray, gt: np.ndarray, ignore: np.ndarray,
                iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of one image (see the module doc).

    Returns:
        ``status (D,)`` int8 in detection order (1 TP, 0 FP, -1 ignored), ``matched (K,)`` bool over
        ground truth, and ``match_score (K,)`` float (score of the detection matched to each box, -inf if none).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    status = np.zeros(len(det), np.int8)
    matched = np.zeros(len(gt), bool)
    match_score = np.full(len(gt), -np.inf)
    if len(det) == 0:
        return status, matched, match_score
    iou = box_iou(det, gt)
    valid = ~np.asarray(ignore, bool)
    for d in order:
        cand = np.where(valid & ~matched, iou[d], -1.0)
        j = int(cand.argmax()) if len(gt) else -1
        if j >= 0 and cand[j] >= iou_thr:
            status[d] = 1
            matched[j] = True
            match_score[j] = scores[d]
        elif len(gt) and np.any(iou[d][~valid] >= iou_thr):
            status[d] = -1
    return status, matched, match_score


def average_precision(scores: np.ndarray, status: np.ndarray, n_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """All-point interpolated AP of pooled detections (``status`` 1 TP / 0 FP / -1 ignored); returns AP, P, R."""
    keep = status >= 0
    scores, tp = np.asarray(scores)[keep], (status[keep] == 1)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / max(n_gt, 1)
    precision = np.divide(ctp, ctp + cfp, out=np.zeros_like(ctp), where=(ctp + cfp) > 0)
    if n_gt == 0:
        return 0.0, precision, recall
    mrec = np.r_[0.0, recall, 1.0]
    mpre = np.r_[0.0, precision, 0.0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum()), precision, recall


def evaluate_detector(detect: Callable[[np.ndarray], list], root: str | Path, gt_file: str | Path | None = None,
                      *, operating_threshold: float = 0.5, iou_thr: float = 0.5, limit: int | None = None,
                      progress: bool = False) -> dict[str, Any]:
    """Run ``detect`` (RGB uint8 image -> list of ``Face``) over a WIDER-format folder and score it.

    ``root`` holds ``images/<event>/*.jpg`` and the ground truth (``*_bbx_gt.txt``, or ``gt_file``).
    Run the detector with a low score threshold (e.g. 0.02) so the AP sees the whole curve.
    """
    from lightfer.io import read_image

    root = Path(root)
    if gt_file is None:
        found = sorted(root.glob("*bbx_gt.txt"))
        if not found:
            raise FileNotFoundError(f"{root}: no *_bbx_gt.txt ground-truth file")
        gt_file = found[0]
    images = read_wider_gt(gt_file)[:limit]
    img_dir = root / "images" if (root / "images").is_dir() else root
    all_scores, all_status = [], []
    n_valid, heights, hit_op = 0, [], []
    events: dict[str, list[int]] = {}
    t_total = 0.0
    it: Any = images
    if progress:
        from tqdm import tqdm

        it = tqdm(images, desc="detect", unit="img", leave=False)
    for g in it:
        rgb = read_image(img_dir / g.path)
        t0 = time.perf_counter()
        faces = detect(rgb)
        t_total += time.perf_counter() - t0
        det = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        sc = np.array([f.score for f in faces], np.float64)
        status, matched, mscore = match_image(det, sc, g.boxes, g.ignore, iou_thr)
        all_scores.append(sc)
        all_status.append(status)
        valid = ~g.ignore
        n_valid += int(valid.sum())
        heights.append((g.boxes[valid, 3] - g.boxes[valid, 1]))
        hit_op.append(mscore[valid] >= operating_threshold)
        ev = events.setdefault(g.path.split("/")[0], [0, 0])
        ev[0] += int((mscore[valid] >= operating_threshold).sum())
        ev[1] += int(valid.sum())
    scores, status = np.concatenate(all_scores or [np.zeros(0)]), np.concatenate(all_status or [np.zeros(0, np.int8)])
    ap, _, _ = average_precision(scores, status, n_valid)
    op = scores >= operating_threshold
    tp_op, fp_op = int((status[op] == 1).sum()), int((status[op] == 0).sum())
    h, hit = np.concatenate(heights or [np.zeros(0)]), np.concatenate(hit_op or [np.zeros(0, bool)])
    by_size = {}
    for name, lo, hi in SIZE_BINS:
        m = (h >= lo) & (h < hi)
        by_size[name] = {"faces": int(m.sum()), "recall": float(hit[m].mean()) if m.any() else None}
    return {
        "images": len(images), "valid_faces": n_valid, "ignored_faces": int(sum(g.ignore.sum() for g in images)),
        "detections": int(len(scores)), "iou_threshold": iou_thr, "ap": ap,
        "recall_max": float((status == 1).sum() / n_valid) if n_valid else 0.0,
        "operating_threshold": operating_threshold,
        "recall": tp_op / n_valid if n_valid else 0.0,
        "precision": tp_op / (tp_op + fp_op) if tp_op + fp_op else 0.0,
        "recall_by_height": by_size,
        "recall_by_event": {k: {"faces": v[1], "recall": v[0] / v[1] if v[1] else None} for k, v in sorted(events.items())},
        "ms_per_image": 1e3 * t_total / max(len(images), 1),
        "protocol": "greedy by score, IoU>=0.5 to an unmatched valid box; invalid==1 boxes ignored; "
                    "VOC all-point AP over pooled detections",
    }
