"""Five-point face alignment: the one crop used both to build training data and at inference.

A similarity transform (rotation + uniform scale + translation, least squares, Umeyama 1991)
maps the detected landmarks onto :data:`ALIGN_TEMPLATE`, then an affine warp cuts a square
crop. The template is the widely used 5-point ArcFace layout on a 112x112 canvas (left eye,
right eye, nose tip, left and right mouth corner — "left" as seen in the image), normalised
to the unit square. ``margin`` enlarges the field of view: the template is shrunk towards the
crop centre by ``1 / (1 + 2 * margin)``, so ``margin=0.25`` shows 50% more face width than the
tight ArcFace crop (forehead and chin included).

Large faces are anti-aliased: when the warp shrinks the image (scale below :data:`ANTIALIAS_BELOW`,
e.g. a 400 px face cut to a 64 px crop), the region it reads is first reduced by pixel-area
averaging (``cv2.INTER_AREA``, by a whole factor when the warp shrinks 2x or more) to about the
crop's scale, and the warp then samples that. A plain bilinear warp reads 4 of the tens or hundreds
of pixels under each output pixel, so skin texture, hair and sensor noise fold into the crop as
noise that the training crops (FER2013's 48 px faces, enlarged) never show. Measured with ``scripts/antialias_probe.py`` (docs/model_card_history.md, "Large faces"): FER2013
test faces enlarged 8x with noise of 8 grey levels score 60.4% with the plain warp and 69.0% with
this one (68.1% at their own size).
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


ANTIALIAS_BELOW = 1.0  # warps that shrink the image read an area-averaged copy of the region


def warp_crop(image: np.ndarray, m: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE,
              antialias: bool = True) -> np.ndarray:
    """``cv2.warpAffine(image, m, (size, size))`` bilinear, anti-aliased when ``m`` shrinks the image.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8 (or float) image.
        m: ``(2, 3)`` affine map from image pixels to crop pixels (cv2 convention, pixel centres at
            integers).
        size: side of the square output.
        antialias: False gives the plain bilinear warp at any scale.

    Returns:
        ``(size, size[, C])`` crop, the dtype of ``image``.
    """
    m = np.asarray(m, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if antialias and 0 < scale < ANTIALIAS_BELOW:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) - [0.5, 0.5, 0]
        src = corners @ inv.T  # where the crop's corners fall in the image
        pad = 2.0 / scale  # the bilinear footprint of an output pixel, in image pixels, and some slack
        h, w = image.shape[:2]
        x0, y0 = (max(0, int(np.floor(v - pad))) for v in src.min(0))
        x1, y1 = min(w, int(np.ceil(src[:, 0].max() + pad))), min(h, int(np.ceil(src[:, 1].max() + pad)))
        k = int(1.0 / scale)  # an integer factor takes cv2's fast box-filter path (4x faster on large faces)
        if k >= 2:  # whole k x k blocks: extend the region, replicating the image edge where it runs out
            x1, y1 = x0 + -(-(x1 - x0) // k) * k, y0 + -(-(y1 - y0) // k) * k
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = image[y0:y1, x0:x1]
            if roi.shape[:2] != (y1 - y0, x1 - x0):
                roi = cv2.copyMakeBorder(roi, 0, y1 - y0 - roi.shape[0], 0, x1 - x0 - roi.shape[1], border)
            if k >= 2:  # the warp then shrinks by scale * k, in (0.5, 1]
                rw, rh = (x1 - x0) // k, (y1 - y0) // k
            else:
                rw, rh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
            fx, fy = rw / (x1 - x0), rh / (y1 - y0)
            # a pixel centre p of the image sits at q = f * (p - o + 0.5) - 0.5 in ``small`` (cv2.resize's convention)
            d_inv = np.diag([1.0 / fx, 1.0 / fy])
            a = m[:, :2]
            t = m[:, 2] + a @ (np.array([x0, y0], np.float64) - 0.5 + 0.5 * np.array([1.0 / fx, 1.0 / fy]))
            m = np.hstack([a @ d_inv, t[:, None]])
            image = small
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


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
    antialias: bool = True,
) -> np.ndarray:
    """Warp the face with 5 ``landmarks (5, 2)`` (image px) to a ``(size, size, C)`` crop of ``image (H, W, C)``.

    Pixels outside the image are filled by replicating the border (no black wedges on faces at
    the image edge). The same call builds training crops (``lightfer prepare``) and serving crops;
    ``antialias`` as in :func:`warp_crop`.
    """
    m = similarity_transform(landmarks, template_points(size, margin))
    return warp_crop(image, m, size, border, antialias)


def crop_box(image: np.ndarray, box: np.ndarray, size: int, margin: float = 0.0,
             antialias: bool = True) -> np.ndarray:
    """Square crop around ``box`` (x1, y1, x2, y2), enlarged by ``margin`` per side, resized to ``size``.

    Used for faces without landmarks (e.g. crops from other detectors): ``(size, size, C)``;
    ``antialias`` as in :func:`warp_crop`.
    """
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    if side <= 0:
        raise ValueError(f"empty box {box}")
    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return warp_crop(image, m, size, cv2.BORDER_REPLICATE, antialias)


def crop_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int, margin: float = 0.0, mode: str = "align",
    antialias: bool = True,
) -> np.ndarray:
    """The model's face crop ``(size, size, C)``: ``mode="align"`` (5-point warp) or ``"box"`` (square box crop).

    Models declare the mode in ``pretrained_cfg.crop_mode``; serving and ``lightfer prepare`` both call this
    (``antialias`` as in :func:`warp_crop`).
    """
    if mode == "align":
        if landmarks is None or len(landmarks) != 5:
            raise ValueError("align mode needs 5 landmarks")
        return align_face(image, landmarks, size, margin, antialias=antialias)
    if mode == "box":
        return crop_box(image, box, size, margin, antialias)
    raise ValueError(f"unknown crop mode {mode!r} (use 'align' or 'box')")
