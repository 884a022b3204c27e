"""Typed results: one :class:`Face` per detected face, one :class:`FrameResult` per image or frame.

Plain dataclasses with keyword-only constructors (as detectron2's ``Instances`` but flat),
and ``to_dict()`` giving the JSON schema documented in the README.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _round(values: Any, ndigits: int = 2) -> list:
    return [round(float(v), ndigits) for v in np.asarray(values, dtype=np.float64).ravel()]


@dataclass(kw_only=True)
class Face:
    """One face: where it is and what expression it shows."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2 in input-image pixels
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (5, 2) float32: left eye, right eye, nose tip, left/right mouth corner (image left/right)
    label: str | None = None  # most probable expression, None when not classified
    probs: dict[str, float] = field(default_factory=dict)  # class -> probability, sums to 1
    track_id: int | None = None  # persistent identity over video frames (None for still images)
    smoothed_probs: dict[str, float] | None = None  # temporally smoothed probabilities (video only)

    @property
    def confidence(self) -> float:
        """Probability of the predicted label (0 when unclassified)."""
        return float(self.probs.get(self.label, 0.0)) if self.label else 0.0

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: box, score, landmarks, label, confidence, probs (+ track fields for video)."""
        d: dict[str, Any] = {
            "box": _round(self.box, 1),
            "score": round(float(self.score), 4),
            "landmarks": [_round(p, 1) for p in np.asarray(self.landmarks).reshape(-1, 2)],
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probs": {k: round(float(v), 4) for k, v in self.probs.items()},
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        if self.smoothed_probs is not None:
            d["smoothed_probs"] = {k: round(float(v), 4) for k, v in self.smoothed_probs.items()}
        return d


@dataclass(kw_only=True)
class FrameResult:
    """Everything found in one image or video frame."""

    faces: list[Face] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the decoded image
    source: str | None = None  # file path / URL / "<array>"
    frame_index: int | None = None  # video only
    timestamp: float | None = None  # video only, seconds
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    error: str | None = None  # set when the input could not be analysed; faces is then empty

    @property
    def ok(self) -> bool:
        """True when the input was read and analysed."""
        return self.error is None

    def __len__(self) -> int:
        return len(self.faces)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; see the README's JSON schema."""
        d: dict[str, Any] = {
            "source": self.source,
            "width": int(self.image_size[0]),
            "height": int(self.image_size[1]),
            "faces": [f.to_dict() for f in self.faces],
            "timings_ms": {k: round(float(v), 2) for k, v in self.timings.items()},
            "error": self.error,
        }
        if self.frame_index is not None:
            d["frame_index"] = int(self.frame_index)
        if self.timestamp is not None:
            d["timestamp"] = round(float(self.timestamp), 4)
        return d
