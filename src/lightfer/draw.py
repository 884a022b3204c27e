"""Annotated pictures: boxes, landmarks and "label 93%" tags drawn on an RGB copy."""
from __future__ import annotations

import cv2
import numpy as np

from lightfer.structures import Face, FrameResult

# RGB colour per expression (unknown labels get a stable colour from their name).
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40),
    "disgust": (120, 170, 30),
    "fear": (150, 60, 200),
    "happy": (250, 200, 0),
    "sad": (40, 110, 230),
    "surprise": (255, 120, 20),
    "neutral": (200, 200, 200),
    "contempt": (160, 100, 60),
}
LANDMARK_COLORS = [(0, 255, 0), (0, 255, 0), (255, 0, 255), (0, 200, 255), (0, 200, 255)]


def color_for(label: str | None) -> tuple[int, int, int]:
    """RGB colour used for a label."""
    if label is None:
        return (0, 220, 0)
    if label in COLORS:
        return COLORS[label]
    h = sum(map(ord, label)) * 2654435761 % (1 << 24)
    return ((h >> 16) & 255, (h >> 8) & 255, h & 255)


def face_caption(face: Face) -> str:
    """Text drawn above a face: ``[#id ]label 93%`` (or the detector score when unclassified)."""
    probs = face.smoothed_probs or face.probs
    if face.label is not None and probs:
        label = max(probs, key=probs.get)
        text = f"{label} {probs[label] * 100:.0f}%"
    else:
        text = f"face {face.score:.2f}"
    if face.track_id is not None:
        text = f"#{face.track_id} {text}"
    return text


def annotate(image: np.ndarray, result: FrameResult | list[Face], *, landmarks: bool = True) -> np.ndarray:
    """Draw every face of ``result`` on a copy of the RGB uint8 ``image (H, W, 3)``; returns the copy."""
    faces = result.faces if isinstance(result, FrameResult) else result
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font_scale = max(0.4, max(h, w) / 1400)
    for face in faces:
        probs = face.smoothed_probs or face.probs
        label = max(probs, key=probs.get) if probs else face.label
        color = color_for(label)
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if landmarks and face.landmarks is not None:
            r = max(1, thick + 1)
            for (px, py), c in zip(np.asarray(face.landmarks).reshape(-1, 2), LANDMARK_COLORS):
                cv2.circle(out, (int(round(px)), int(round(py))), r, c, -1, cv2.LINE_AA)
        text = face_caption(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thick))
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + base // 2), color, -1)
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, text, (x1 + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color,
                    max(1, thick), cv2.LINE_AA)
    return out
