"""ExpressionClassifier: aligned face crops in, class probabilities out (PyTorch or ONNX Runtime).

Preprocessing (size, channels, mean/std) is read from the model's ``pretrained_cfg``; the ONNX
file is exported once per model and weights into the cache and checked against PyTorch.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from lightfer.defaults import DEFAULT_MODEL, PRECISIONS
from lightfer.models import PretrainedCfg, create_model, preprocess_crops

log = logging.getLogger(__name__)

def int8_file(model: nn.Module, precision: str = "auto") -> Path | None:
    """The shipped int8 ONNX file the ONNX Runtime backend runs for ``model`` at ``precision``, else None.

    ``"auto"``: the model's ``pretrained_cfg.int8_onnx`` when its weights are the ones it was quantised from and
    either the CPU has 8-bit dot-product instructions or the file has 7-bit weights (``int8_any_cpu``: AVX2's
    kernels cannot saturate on it; timings in docs/model_card_history.md); ``"int8"``: the file whatever the CPU;
    ``"fp32"``: never.
    (The file is not read here: :class:`ExpressionClassifier` checks its sha256 when it loads it.)
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if precision == "fp32" or cfg is None or not cfg.int8_onnx or cfg.int8_state != _state_hash(model):
        return None
    if precision == "auto":
        from lightfer.export.quantize import cpu_has_int8_dot

        if not (cfg.int8_any_cpu or cpu_has_int8_dot()):
            return None
    return Path(cfg.int8_onnx)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class ExpressionClassifier:
    """Wraps a registered expression model: ``clf.predict(crops) -> (N, C)`` probabilities.

    Args:
        model: registered name (pretrained weights are loaded) or an ``nn.Module`` carrying ``pretrained_cfg``.
        backend: ``"onnx"`` (ONNX Runtime, CPU) or ``"torch"``.
        device: torch device for the torch backend.
        threads: ONNX Runtime intra-op threads (None = its default).
        batch_size: crops per forward pass.
        tta_flip: average each crop's probabilities with its mirror's; ``None`` takes the model's
            ``pretrained_cfg.tta_flip`` (on for models trained and measured that way).
        precision: ONNX Runtime backend only. ``"auto"`` runs the model's shipped int8 quantisation
            (``pretrained_cfg.int8_onnx``) when it has one, its weights are the ones it was quantised from and
            either the file has 7-bit weights (``int8_any_cpu``) or the CPU has 8-bit dot-product instructions
            (:func:`lightfer.export.quantize.cpu_has_int8_dot`), else float32; ``"int8"`` requires it; ``"fp32"`` always exports the float32 model. The torch
            backend always runs float32. ``self.precision`` says what runs.
    """

    def __init__(
        self,
        model: str | nn.Module = DEFAULT_MODEL,
        *,
        backend: str = "onnx",
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
        tta_flip: bool | None = None,
        precision: str = "auto",
    ) -> None:
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(model, str):
            model = create_model(model, pretrained=True)
        if not hasattr(model, "pretrained_cfg"):
            raise ValueError("the model needs a pretrained_cfg (create it with lightfer.models.create_model)")
        self.model = model.eval()
        self.cfg: PretrainedCfg = model.pretrained_cfg
        self.name: str = getattr(model, "model_name", type(model).__name__)
        self.backend = backend
        self.device = device
        self.batch_size = batch_size
        self.tta_flip = bool(self.cfg.tta_flip if tta_flip is None else tta_flip)
        self.precision = "fp32"
        if backend == "onnx":
            from lightfer.export.onnx import ort_session

            path = self._int8_path(precision)
            if path is not None:
                self.precision = "int8"
            self._sess = ort_session(path or self.ensure_onnx(), threads=threads)
            self._input = self._sess.get_inputs()[0].name
        else:
            if precision == "int8":
                raise ValueError("precision='int8' needs the ONNX Runtime backend")
            self.model.to(device)

    def _int8_path(self, precision: str) -> Path | None:
        """:func:`int8_file`, sha256-checked; with ``precision="int8"`` an error where there is none to use."""
        cfg = self.cfg
        path = int8_file(self.model, precision)
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shipped int8 model missing from the package")
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            if got != cfg.int8_sha256:
                raise RuntimeError(f"{path}: sha256 {got} does not match {cfg.int8_sha256} recorded in its .json")
            return path
        if precision == "int8":
            why = "ships no int8 model" if not cfg.int8_onnx else "has other weights than its int8 model was made from"
            raise ValueError(f"precision='int8': {self.name} {why}")
        return None

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in output order."""
        return self.cfg.classes

    def onnx_path(self) -> Path:
        """Cache path of this model's ONNX export (keyed by name and weights)."""
        from lightfer.assets import cache_dir

        return cache_dir() / "onnx" / f"{self.name}_{_state_hash(self.model)}.onnx"

    def ensure_onnx(self) -> Path:
        """Export to ONNX once (dynamic batch) and verify parity with PyTorch; returns the path."""
        path = self.onnx_path()
        if path.exists():
            return path
        from lightfer.export.onnx import check_onnx_parity, export_onnx

        s = self.cfg.input_size
        example = torch.randn(2, self.cfg.in_chans, s, s, generator=torch.Generator().manual_seed(0))
        export_onnx(self.model.cpu(), path, example)
        try:
            check_onnx_parity(self.model, path, example)
        except AssertionError:
            path.unlink(missing_ok=True)
            raise
        return path

    def prepare(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops of any sizes ``[(h, w, 3)]`` -> model input ``(N, C, S, S)`` float32."""
        s = self.cfg.input_size
        fixed = []
        for c in crops:
            if c.shape[:2] != (s, s):
                interp = cv2.INTER_AREA if min(c.shape[:2]) > s else cv2.INTER_LINEAR
                c = cv2.resize(c, (s, s), interpolation=interp)
            fixed.append(c)
        return preprocess_crops(np.stack(fixed), self.cfg)

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        """One batch ``(B, C, S, S)`` float32 -> logits ``(B, classes)``."""
        if self.backend == "onnx":
            return self._sess.run(None, {self._input: chunk})[0]
        with torch.inference_mode():
            return self.model(torch.from_numpy(chunk).to(self.device)).float().cpu().numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Model input ``(N, C, S, S)`` float32 -> logits ``(N, classes)``.

        With flip TTA the crop and its mirror run in one batch and the result is the log of their mean
        probabilities (a valid logit vector: its softmax is that mean)."""
        outs = []
        step = max(1, self.batch_size // 2) if self.tta_flip else self.batch_size
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i : i + step])
            if not self.tta_flip:
                outs.append(self._forward(chunk))
                continue
            both = self._forward(np.concatenate([chunk, np.ascontiguousarray(chunk[..., ::-1])]))
            p = softmax(both)
            outs.append(np.log(np.maximum((p[: len(chunk)] + p[len(chunk):]) / 2, 1e-12)).astype(np.float32))
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, len(self.classes)), np.float32)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 face crops -> probabilities ``(N, classes)`` (rows sum to 1)."""
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return softmax(self.logits(self.prepare(crops))).astype(np.float32)
