"""A fake analyzer for the service tests: fast, deterministic, and observable (calls, concurrency)."""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lightfer.structures import Face, FrameResult

CLASSES = ("angry", "happy", "neutral")
# three faces at fixed places (fractions of the image), with detector scores 0.9 > 0.6 > 0.3
FAKE_FACES = ((0.05, 0.05, 0.45, 0.45, 0.9), (0.55, 0.05, 0.95, 0.45, 0.6), (0.3, 0.6, 0.4, 0.7, 0.3))


@dataclass(frozen=True)
class FakeDetectorCfg:
    score_threshold: float = 0.5
    nms_iou: float = 0.4
    min_face_size: float = 0.0
    max_faces: int | None = None


class FakeDetector:
    """Finds the three FAKE_FACES and applies its cfg like the real detector."""

    def __init__(self, delay: float = 0.0) -> None:
        self.cfg = FakeDetectorCfg()
        self.delay = delay

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        faces = []
        for x1, y1, x2, y2, score in FAKE_FACES:
            box = np.array([x1 * w, y1 * h, x2 * w, y2 * h], dtype=np.float32)
            fx, fy = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32).T
            points = np.stack([box[0] + fx * (box[2] - box[0]), box[1] + fy * (box[3] - box[1])], axis=1)
            face = Face(box=box, score=score, landmarks=points)
            if score >= self.cfg.score_threshold and face.size >= self.cfg.min_face_size:
                faces.append(face)
        if self.delay:
            time.sleep(self.delay)
        return faces[: self.cfg.max_faces] if self.cfg.max_faces else faces


class FakeClassifier:
    """Holds the ``tta_flip`` switch that the service may override per request."""

    tta_flip = False


class FakeAnalyzer:
    """Stands for lightfer.Analyzer: labels each face by the mean brightness of the image.

    Counts calls and the most calls ever running at once (to check the service's locking).
    """

    def __init__(self, name: str = "fake", delay: float = 0.0) -> None:
        self.name = name
        self.detector = FakeDetector(delay)
        self.classifier = FakeClassifier()
        self.classes = CLASSES
        self.calls = 0
        self.running = 0
        self.max_running = 0
        self._count_lock = threading.Lock()

    def analyze_array(self, rgb: np.ndarray, *, source: str | None = None,
                      faces: list[Face] | None = None) -> FrameResult:
        with self._count_lock:
            self.calls += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if faces is None:
                faces = self.detector.detect(rgb)
            label = CLASSES[int(rgb.mean()) * len(CLASSES) // 256]
            for f in faces:
                top = 0.7 if self.classifier.tta_flip else 0.8  # observable: with TTA the top probability is 0.7
                f.probs = {c: (top if c == label else (1 - top) / 2) for c in CLASSES}
                f.label = label
            return FrameResult(faces=faces, image_size=(rgb.shape[1], rgb.shape[0]), source=source,
                               timings={"detect": 1.0, "classify": 0.5})
        finally:
            with self._count_lock:
                self.running -= 1

    def __call__(self, image: np.ndarray, *, source: str | None = None) -> FrameResult:
        return self.analyze_array(image, source=source)


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    """RGB uint8 array -> encoded bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()
