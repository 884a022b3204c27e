"""Anchors, box/landmark decoding and NMS for RetinaFace, in NumPy (no torchvision).

Anchors follow the original: per FPN level (strides 8, 16, 32) two square sizes
({16, 32}, {64, 128}, {256, 512} px) centred on every cell, in (row, col, size) order;
box deltas are decoded with variances (0.1, 0.2).
"""
from __future__ import annotations

import math

import numpy as np

MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCES: tuple[float, float] = (0.1, 0.2)


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors for an input of ``height x width`` px: ``(A, 4)`` float32 (cx, cy, w, h) normalised to [0, 1]."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width, indexing="ij")
        cells = []
        for s in sizes:
            cells.append(np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], axis=-1))
        out.append(np.stack(cells, axis=2).reshape(-1, 4))  # (fh, fw, 2 sizes, 4) -> row, col, size order
    return np.concatenate(out, axis=0).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: tuple[float, float] = VARIANCES) -> np.ndarray:
    """Box deltas ``(A, 4)`` -> boxes ``(A, 4)`` (x1, y1, x2, y2), normalised like ``priors``."""
    centers = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(np.clip(loc[:, 2:] * variances[1], -20.0, 20.0))
    return np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray, variances: tuple[float, float] = VARIANCES) -> np.ndarray:
    """Landmark deltas ``(A, 10)`` -> points ``(A, 5, 2)`` normalised like ``priors``."""
    pre = pre.reshape(-1, 5, 2)
    return priors[:, None, :2] + pre * variances[0] * priors[:, None, 2:]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``(N, 4)`` and ``(M, 4)`` (x1, y1, x2, y2) -> ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices ``(K,)`` by decreasing score.

    A box is dropped when its IoU with a higher-scoring kept box is **greater** than
    ``iou_threshold`` (areas use continuous coordinates, no +1).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
