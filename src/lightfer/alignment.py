"""Five-point face alignment: the one crop used both to build training data and at inference.

A similarity transform (rotation + uniform scale + translation, least squares, Umeyama 1991)
maps the detected landmarks onto :data:`ALIGN_TEMPLATE`, then an affine warp cuts a square
crop. The template is the widely used 5-point ArcFace layout on a 112x112 canvas (left eye,
right eye, nose tip, left and right mouth corner — "left" as seen in the image), normalised
to the unit square. ``margin`` enlarges the field of view: the template is shrunk towards the
crop centre by ``1 / (1 + 2 * margin)``, so ``margin=0.25`` shows 50% more face width than the
tight ArcFace crop (forehead and chin included).
"""
from __future__ import annotations

import cv2
import numpy as np

ALIGN_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
) / 112.0


def template_points(size: int, margin: float = 0.0) -> np.ndarray:
    """The template placed in a ``size x size`` crop with ``margin``: ``(5, 2)`` float64 pixels."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if margin <= -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin}")
    return ((ALIGN_TEMPLATE - 0.5) / (1.0 + 2.0 * margin) + 0.5) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping points ``src (N, 2)`` onto ``dst (N, 2)``; returns ``(2, 3)`` float64.

    Umeyama's closed form: ``dst ≈ s * R @ src + t`` with ``R`` a proper rotation (no reflection).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("source points are degenerate (all equal)")
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    margin: float = 0.0,
    border: int = cv2.BORDER_REPLICATE,
) -> np.ndarray:
    """Warp the face with 5 ``landmarks (5, 2)`` (image px) to a ``(size, size, C)`` crop of ``image (H, W, C)``.

    Pixels outside the image are filled by replicating the border (no black wedges on faces at
    the image edge). The same call builds training crops (``lightfer prepare``) and serving crops.
    """
    m = similarity_transform(landmarks, template_points(size, margin))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def crop_box(image: np.ndarray, box: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """Square crop around ``box`` (x1, y1, x2, y2), enlarged by ``margin`` per side, resized to ``size``.

    Used for faces without landmarks (e.g. crops from other detectors): ``(size, size, C)``.
    """
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    if side <= 0:
        raise ValueError(f"empty box {box}")
    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int, margin: float = 0.0, mode: str = "align"
) -> np.ndarray:
    """The model's face crop ``(size, size, C)``: ``mode="align"`` (5-point warp) or ``"box"`` (square box crop).

    Models declare the mode in ``pretrained_cfg.crop_mode``; serving and ``lightfer prepare`` both call this.
    """
    if mode == "align":
        if landmarks is None or len(landmarks) != 5:
            raise ValueError("align mode needs 5 landmarks")
        return align_face(image, landmarks, size, margin)
    if mode == "box":
        return crop_box(image, box, size, margin)
    raise ValueError(f"unknown crop mode {mode!r} (use 'align' or 'box')")
