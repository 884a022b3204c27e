"""Per-sample transforms on uint8 face crops and the model-input conversion used by eval and cache.

Geometric augmentations act on uint8 ``(H, W)`` / ``(H, W, 3)`` arrays (OpenCV), then
:class:`ToModelInput` converts to the model's float ``(C, S, S)`` using its ``pretrained_cfg``
(crop size, channels, mean/std) so preprocessing is read from the model, never restated.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from lightfer.data.images import resize


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        self.p, self.rng = p, rng or np.random.default_rng()

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1]) if self.rng.random() < self.p else img


class RandomAffine:
    """Random rotation (degrees), isotropic scale and translation (fraction of the side); reflect border."""

    def __init__(self, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.08,
                 rng: np.random.Generator | None = None) -> None:
        self.degrees, self.scale, self.translate = degrees, scale, translate
        self.rng = rng or np.random.default_rng()

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        angle = self.rng.uniform(-self.degrees, self.degrees)
        s = self.rng.uniform(*self.scale)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
        m[:, 2] += self.rng.uniform(-self.translate, self.translate, 2) * (w, h)
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W)`` gray or ``(N, H, W, 3)`` -> ``(N, H, W, 3)``."""
    images = np.asarray(images)
    return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


def crops_to_input(images: np.ndarray, cfg: Any) -> np.ndarray:
    """uint8 face crops ``(N, H, W[, 3])`` -> float32 model input ``(N, C, S, S)`` for a ``PretrainedCfg``.

    Resizes to ``cfg.input_size`` exactly as serving does (``ExpressionClassifier.prepare``: area
    down, bilinear up), then the registry's ``preprocess_crops`` (gray by ITU-R 601 luma when
    ``in_chans`` is 1, mean/std normalisation).
    """
    from lightfer.models.registry import preprocess_crops

    rgb = to_rgb(images)
    s = int(cfg.input_size)
    if rgb.shape[1:3] != (s, s):
        rgb = np.stack([resize(im, s, up=cv2.INTER_LINEAR) for im in rgb]) if len(rgb) else np.zeros((0, s, s, 3), np.uint8)
    return preprocess_crops(rgb, cfg)


class ToModelInput:
    """uint8 crop ``(H, W[, 3])`` -> float tensor ``(C, S, S)`` normalised as ``cfg`` says."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(crops_to_input(img[None], self.cfg)[0])


def train_transform(cfg: Any, rng: np.random.Generator | None = None) -> Compose:
    """Flip + small affine jitter, then :class:`ToModelInput` (the default augmentation)."""
    rng = rng or np.random.default_rng()
    return Compose([RandomHorizontalFlip(0.5, rng), RandomAffine(rng=rng), ToModelInput(cfg)])


def eval_transform(cfg: Any) -> ToModelInput:
    """No augmentation: only the conversion to the model input."""
    return ToModelInput(cfg)
