"""FaceDetector: RGB uint8 images in, :class:`~lightfer.structures.Face` lists out.

Runs RetinaFace MobileNet-0.25 through ONNX Runtime (default on CPU; the ONNX file is exported
once from the PyTorch weights into the cache) or through PyTorch (``backend="torch"``, for GPU
batches and for tests). Post-processing (anchors, decoding, NMS) is shared NumPy code.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from lightfer.detection.box_utils import decode_boxes, decode_landmarks, nms, prior_boxes
from lightfer.structures import Face

log = logging.getLogger(__name__)

BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)  # training means, BGR order
WEIGHTS_ASSET = "retinaface_mobilenet0.25.pth"


@dataclass(frozen=True)
class DetectorConfig:
    """Post-processing and resize policy."""

    score_threshold: float = 0.5  # keep faces whose score is at least this
    nms_iou: float = 0.4  # suppress overlaps above this IoU
    min_face_size: float = 0.0  # drop faces whose shorter box side (input px) is smaller
    max_faces: int | None = None  # keep at most this many (highest scores)
    max_size: int = 1280  # downscale images whose longer side exceeds this (0 = never)
    min_size: int = 0  # upscale images whose longer side is below this (0 = never), e.g. 48 px crops
    pre_nms_topk: int = 5000  # candidates entering NMS


def onnx_path() -> Path:
    """Where the exported detector lives (next to its source weights in the cache)."""
    from lightfer.assets import ASSETS, cache_dir

    tag = ASSETS[WEIGHTS_ASSET].sha256[:12]
    return cache_dir() / "onnx" / f"retinaface_mnet025_{tag}.onnx"


def build_torch_model() -> "torch.nn.Module":  # noqa: F821
    """The PyTorch RetinaFace with the original WIDER FACE weights loaded."""
    from lightfer.assets import asset_path
    from lightfer.detection.retinaface import load_retinaface

    return load_retinaface(str(asset_path(WEIGHTS_ASSET)))


def ensure_onnx(force: bool = False) -> Path:
    """Export the detector to ONNX once (dynamic batch, height and width); returns its path."""
    path = onnx_path()
    if path.exists() and not force:
        return path
    import torch

    from lightfer.export.onnx import export_onnx

    model = build_torch_model()
    example = torch.zeros(1, 3, 320, 256)
    export_onnx(model, path, example, output_names=("loc", "conf", "landms"), dynamic_hw=True)
    return path


class FaceDetector:
    """RetinaFace MobileNet-0.25 with NMS: ``detector.detect(image) -> list[Face]``.

    Args:
        backend: ``"onnx"`` (ONNX Runtime, CPU) or ``"torch"``.
        device: torch device for the torch backend.
        threads: ONNX Runtime intra-op threads (None = its default).
        **kwargs: fields of :class:`DetectorConfig`.
    """

    def __init__(self, backend: str = "onnx", *, device: str = "cpu", threads: int | None = None, **kwargs) -> None:
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
        self.cfg = DetectorConfig(**kwargs)
        self.backend = backend
        self.device = device
        if backend == "onnx":
            from lightfer.export.onnx import ort_session

            self._sess = ort_session(ensure_onnx(), threads=threads)
            self._input = self._sess.get_inputs()[0].name
        else:
            self._model = build_torch_model().to(device)
        self._priors: dict[tuple[int, int], np.ndarray] = {}
        self.last_timings: dict[str, float] = {}

    # -- pre-processing -------------------------------------------------------------------
    def _scale_for(self, h: int, w: int) -> float:
        long_side = max(h, w)
        if self.cfg.max_size and long_side > self.cfg.max_size:
            return self.cfg.max_size / long_side
        if self.cfg.min_size and long_side < self.cfg.min_size:
            return self.cfg.min_size / long_side
        return 1.0

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """RGB uint8 ``(H, W, 3)`` -> BGR mean-subtracted float32 ``(h, w, 3)`` at the policy's scale."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        scale = self._scale_for(h, w)
        if scale != 1.0:
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (nw, nh), interpolation=interp)
        x = image[:, :, ::-1].astype(np.float32) - BGR_MEAN
        return x, scale

    def _priors_for(self, h: int, w: int) -> np.ndarray:
        key = (h, w)
        if key not in self._priors:
            if len(self._priors) > 32:
                self._priors.clear()
            self._priors[key] = prior_boxes(h, w)
        return self._priors[key]

    # -- inference --------------------------------------------------------------------------
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(B, 3, H, W)`` float32 -> loc ``(B, A, 4)``, conf ``(B, A, 2)``, landms ``(B, A, 10)``."""
        if self.backend == "onnx":
            loc, conf, landms = self._sess.run(None, {self._input: batch})
            return loc, conf, landms
        import torch

        with torch.inference_mode():
            out = self._model(torch.from_numpy(batch).to(self.device))
        return tuple(o.float().cpu().numpy() for o in out)  # type: ignore[return-value]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one RGB uint8 image ``(H, W, 3)``, sorted by decreasing score."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in several RGB uint8 images of any sizes (zero-padded to a common size and run as one batch)."""
        if not images:
            return []
        t0 = time.perf_counter()
        prepared = [self._prepare(im) for im in images]
        hmax = max(p[0].shape[0] for p in prepared)
        wmax = max(p[0].shape[1] for p in prepared)
        batch = np.zeros((len(prepared), 3, hmax, wmax), dtype=np.float32)  # 0 == the mean colour
        for i, (x, _) in enumerate(prepared):
            batch[i, :, : x.shape[0], : x.shape[1]] = x.transpose(2, 0, 1)
        t1 = time.perf_counter()
        loc, conf, landms = self._forward(batch)
        t2 = time.perf_counter()
        priors = self._priors_for(hmax, wmax)
        results = []
        for i, (image, (_, scale)) in enumerate(zip(images, prepared)):
            results.append(self._postprocess(loc[i], conf[i, :, 1], landms[i], priors, (hmax, wmax), scale, image.shape))
        t3 = time.perf_counter()
        self.last_timings = {"detect_pre": (t1 - t0) * 1e3, "detect_net": (t2 - t1) * 1e3, "detect_post": (t3 - t2) * 1e3}
        return results

    def _postprocess(
        self,
        loc: np.ndarray,
        scores: np.ndarray,
        landms: np.ndarray,
        priors: np.ndarray,
        net_hw: tuple[int, int],
        scale: float,
        orig_shape: tuple[int, ...],
    ) -> list[Face]:
        cfg = self.cfg
        idx = np.flatnonzero(scores >= cfg.score_threshold)
        if idx.size == 0:
            return []
        if idx.size > cfg.pre_nms_topk:
            idx = idx[np.argsort(-scores[idx], kind="stable")[: cfg.pre_nms_topk]]
        h, w = net_hw
        to_px = np.array([w, h, w, h], dtype=np.float32) / scale
        boxes = decode_boxes(loc[idx], priors[idx]) * to_px
        points = decode_landmarks(landms[idx], priors[idx]) * (to_px[:2] / 1.0)
        sc = scores[idx]
        keep = nms(boxes, sc, cfg.nms_iou)
        H, W = orig_shape[:2]
        faces: list[Face] = []
        for k in keep:
            box = boxes[k].copy()
            box[[0, 2]] = np.clip(box[[0, 2]], 0, W)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, H)
            if min(box[2] - box[0], box[3] - box[1]) < max(cfg.min_face_size, 1.0):
                continue
            faces.append(Face(box=box.astype(np.float32), score=float(sc[k]), landmarks=points[k].astype(np.float32)))
            if cfg.max_faces is not None and len(faces) >= cfg.max_faces:
                break
        return faces
