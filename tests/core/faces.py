"""Composite test pictures with known face positions, built from the public-domain photos."""
from __future__ import annotations

import math

import cv2
import numpy as np


def face_tile(photo: np.ndarray, face_box: np.ndarray, pad: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Cut a head-and-shoulders tile around ``face_box``; returns the tile and the face centre in it."""
    x1, y1, x2, y2 = face_box
    w, h = x2 - x1, y2 - y1
    X1, Y1 = int(max(0, x1 - pad * w)), int(max(0, y1 - pad * h))
    X2, Y2 = int(min(photo.shape[1], x2 + pad * w)), int(min(photo.shape[0], y2 + pad * h))
    return photo[Y1:Y2, X1:X2].copy(), np.array([(x1 + x2) / 2 - X1, (y1 + y2) / 2 - Y1])


def paste(canvas: np.ndarray, tile: np.ndarray, centre: np.ndarray, at: tuple[int, int], scale: float,
          angle: float = 0.0, mirror: bool = False) -> np.ndarray:
    """Paste a transformed tile with its top-left at ``at``; returns the face centre on the canvas."""
    if mirror:
        tile = tile[:, ::-1]
        centre = np.array([tile.shape[1] - centre[0], centre[1]])
    tile = cv2.resize(np.ascontiguousarray(tile), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    centre = centre * scale
    h, w = tile.shape[:2]
    if angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        tile = cv2.warpAffine(tile, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        centre = m[:, :2] @ centre + m[:, 2]
    x, y = at
    H, W = canvas.shape[:2]
    th, tw = min(h, H - y), min(w, W - x)
    canvas[y : y + th, x : x + tw] = tile[:th, :tw]
    return centre + np.array([x, y])


def background(h: int, w: int) -> np.ndarray:
    """A smooth colour gradient: no face-like texture."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([80 + 80 * xx / w, 100 + 60 * yy / h, 150 - 50 * yy / h], -1).astype(np.uint8)


def match_centres(found: np.ndarray, expected: np.ndarray, tol: float) -> np.ndarray:
    """For each expected centre, the distance to the nearest found box centre (inf when none)."""
    if len(found) == 0:
        return np.full(len(expected), math.inf)
    centres = (found[:, :2] + found[:, 2:]) / 2
    d = np.linalg.norm(expected[:, None] - centres[None], axis=-1)
    return d.min(1)
