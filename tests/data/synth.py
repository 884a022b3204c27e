"""Writers of tiny datasets in each reader's on-disk format (for tests)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import cv2
import numpy as np

FERPLUS_HEADER = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                  "contempt", "unknown", "NF"]


def face_like(seed: int, side: int = 48, value: int | None = None) -> np.ndarray:
    """A gray uint8 image whose mean encodes ``value`` (recoverable after reading)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (side, side), dtype=np.uint8)
    if value is not None:
        img[:] = value
    return img


def write_fer_csv(path: Path, rows: list[tuple[int, np.ndarray | str, str]], orig_rows: list[int] | None = None,
                  gz: bool = False) -> Path:
    """FER2013 CSV; ``rows`` are ``(emotion, pixels (48,48) or raw string, Usage)``."""
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"] + (["orig_row"] if orig_rows is not None else []))
        for i, (emo, pix, usage) in enumerate(rows):
            text = pix if isinstance(pix, str) else " ".join(map(str, np.asarray(pix).ravel()))
            w.writerow([emo, text, usage] + ([orig_rows[i]] if orig_rows is not None else []))
    return path


def write_ferplus_csv(path: Path, rows: list[tuple[str, str, list[int]]]) -> Path:
    """``fer2013new.csv``; rows are ``(Usage, Image name, 10 votes)``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FERPLUS_HEADER)
        for usage, name, votes in rows:
            w.writerow([usage, name] + list(votes))
    return path


def write_png(path: Path, img: np.ndarray) -> Path:
    """Write an RGB or gray uint8 image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), out)
    return path
