"""Analyzer: image -> :class:`FrameResult` (detect every face, align it, classify its expression).

The pipeline shape of insightface's ``FaceAnalysis``: the detector finds faces and landmarks,
:func:`lightfer.alignment.align_face` cuts each face exactly as training crops are cut (size and
margin from the expression model's config), and the classifier reads the crops as one batch.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
from torch import nn

from lightfer.alignment import crop_face
from lightfer.classifier import ExpressionClassifier
from lightfer.defaults import DEFAULT_MODEL
from lightfer.detection import FaceDetector
from lightfer.io import ImageInput, ImageReadError, describe, read_image
from lightfer.structures import Face, FrameResult

log = logging.getLogger(__name__)



class Analyzer:
    """Detect every face in an image and tell its expression.

    Args:
        model: expression model name (see ``lightfer models``) or an ``nn.Module`` with ``pretrained_cfg``.
        backend: ``"onnx"`` (ONNX Runtime, the CPU default) or ``"torch"`` for both stages;
            ``detector_backend`` / ``classifier_backend`` override per stage.
        device: torch device for torch backends.
        threads: ONNX Runtime intra-op threads (torch threads are the process's, set once by the caller).
        tta: average each face's probabilities with its mirror's (twice the classify cost); ``None`` takes
            the model's ``pretrained_cfg.tta_flip``, i.e. how its published numbers were measured.
        precision: ``"auto"`` (a shipped int8 quantisation where the model has one, ONNX Runtime only),
            ``"fp32"`` or ``"int8"``; see :class:`lightfer.classifier.ExpressionClassifier`.
        score_threshold, nms_iou, min_face_size, max_faces, max_size, min_size: detector options
            (see :class:`lightfer.detection.DetectorConfig`).
    """

    def __init__(
        self,
        model: str | nn.Module = DEFAULT_MODEL,
        *,
        backend: str = "onnx",
        detector_backend: str | None = None,
        classifier_backend: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        tta: bool | None = None,
        precision: str = "auto",
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
        min_face_size: float = 0.0,
        max_faces: int | None = None,
        max_size: int = 1280,
        min_size: int = 0,
    ) -> None:
        self.detector = FaceDetector(
            detector_backend or backend,
            device=device,
            threads=threads,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            min_face_size=min_face_size,
            max_faces=max_faces,
            max_size=max_size,
            min_size=min_size,
        )
        self.classifier = ExpressionClassifier(model, backend=classifier_backend or backend, device=device, threads=threads,
                                               tta_flip=tta, precision=precision)

    @property
    def classes(self) -> tuple[str, ...]:
        """Expression class names, in probability-column order."""
        return self.classifier.classes

    @property
    def model_name(self) -> str:
        """Registered name of the expression model."""
        return self.classifier.name

    def __call__(self, image: ImageInput, *, source: str | None = None) -> FrameResult:
        """Analyse one image (path, bytes, PIL image or RGB uint8 array ``(H, W, 3)``).

        Raises:
            ImageReadError: the input could not be decoded (the message names it).
        """
        t0 = time.perf_counter()
        rgb = read_image(image)
        decode_ms = (time.perf_counter() - t0) * 1e3
        result = self.analyze_array(rgb, source=source or describe(image))
        result.timings = {"decode": decode_ms, **result.timings}
        return result

    def analyze_array(self, rgb: np.ndarray, *, source: str | None = None, faces: list[Face] | None = None) -> FrameResult:
        """Analyse an already decoded RGB uint8 image ``(H, W, 3)``; ``faces`` skips detection when given."""
        t0 = time.perf_counter()
        if faces is None:
            faces = self.detector.detect(rgb)
        t1 = time.perf_counter()
        self.classify_faces(rgb, faces, timings=(timings := {}))
        result = FrameResult(faces=faces, image_size=(rgb.shape[1], rgb.shape[0]), source=source)
        result.timings = {"detect": (t1 - t0) * 1e3, **timings}
        return result

    def classify_faces(self, rgb: np.ndarray, faces: list[Face], timings: dict[str, float] | None = None) -> None:
        """Align every face of one image and fill ``label`` and ``probs`` in place (one batch)."""
        t0 = time.perf_counter()
        crops = self.align(rgb, faces)
        t1 = time.perf_counter()
        probs = self.classifier.predict(crops)
        t2 = time.perf_counter()
        for face, p in zip(faces, probs):
            face.probs = {c: float(v) for c, v in zip(self.classes, p)}
            face.label = self.classes[int(np.argmax(p))]
        if timings is not None:
            timings.update(align=(t1 - t0) * 1e3, classify=(t2 - t1) * 1e3)

    def align(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray]:
        """RGB uint8 crops ``(S, S, 3)``, one per face, cut as the expression model expects (its ``crop_mode``)."""
        cfg = self.classifier.cfg
        return [crop_face(rgb, f.box, f.landmarks, cfg.input_size, cfg.crop_margin, cfg.crop_mode) for f in faces]

    def analyze_batch(self, images: Iterable[ImageInput], sources: Sequence[str] | None = None) -> list[FrameResult]:
        """Analyse many images; an unreadable one yields a result with ``error`` set, never an exception."""
        return list(self.iter_analyze(images, sources))

    def iter_analyze(self, images: Iterable[ImageInput], sources: Sequence[str] | None = None) -> Iterator[FrameResult]:
        """Lazy :meth:`analyze_batch`: one :class:`FrameResult` per input, in order."""
        for i, image in enumerate(images):
            source = sources[i] if sources is not None else describe(image)
            try:
                yield self(image, source=source)
            except ImageReadError as e:
                log.warning("%s", e)
                yield FrameResult(source=source, error=str(e))
            except Exception as e:  # one bad input must not lose the rest of the batch
                log.exception("%s: analysis failed", source)
                yield FrameResult(source=source, error=f"{source}: analysis failed ({type(e).__name__}: {e})")

    def stream(self, source: str | int, *, stride: int = 1, fps: float | None = None, max_faces: int | None = None,
               smoothing: str = "ema", **options) -> Iterator[FrameResult]:
        """Analyse a video file, camera index or stream URL lazily: one :class:`FrameResult` per analysed frame.

        Faces carry ``track_id`` and ``smoothed_probs``; results carry ``frame_index`` and ``timestamp``.
        Options (``smoothing_alpha``, ``window``, ``tracker``, ...): see :func:`lightfer.video.stream`.
        """
        from lightfer.video import stream

        return stream(self, source, stride=stride, fps=fps, max_faces=max_faces, smoothing=smoothing, **options)

    def classify(self, crops: Sequence[ImageInput]) -> np.ndarray:
        """Probabilities ``(N, C)`` for images that are already face crops (any size; no detection)."""
        return self.classifier.predict([read_image(c) for c in crops])
