"""The in-memory dataset every reader returns: uint8 image arrays plus canonical labels.

Whole splits are held as one uint8 array (``images`` ``(N, H, W)`` gray or ``(N, H, W, 3)`` RGB)
so a trainer can move them to a tensor once and augment on batches (see TRAINING_NOTES.md);
``__getitem__`` serves the usual ``(image (C, H, W) float tensor, label int)`` pairs through a
transform for ``DataLoader`` use.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lightfer.data.labels import LabelError, canonical_name, remap_indices

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], torch.Tensor]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W)`` or ``(H, W, C)`` -> float32 ``(C, H, W)`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image))
    if x.ndim == 2:
        x = x.unsqueeze(-1)
    return x.permute(2, 0, 1).float().div_(255.0)


@dataclass(eq=False)
class FERDataset(torch.utils.data.Dataset):
    """A split held in memory.

    Attributes:
        images: uint8 ``(N, H, W)`` (gray) or ``(N, H, W, 3)`` (RGB).
        labels: int64 ``(N,)`` indices into ``classes``.
        classes: canonical class names, index -> name.
        soft_labels: optional float32 ``(N, len(classes))`` rows summing to 1 (FER+ votes).
        ids: one string per sample saying where it came from (``file:line`` or a path).
        transform: applied to one uint8 image in ``__getitem__``; default :func:`to_tensor`.
        return_soft: ``__getitem__`` yields ``(image, label, soft)`` instead of ``(image, label)``.
        name: a short description (the spec it was built from).
        meta: extra information; arrays of length N (``face_found``, ``source``) follow ``subset`` / ``remap``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    soft_labels: np.ndarray | None = None
    ids: list[str] = field(default_factory=list)
    transform: Transform | None = None
    return_soft: bool = False
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(f"{self.name}: images must be uint8 (N,H,W[,3]), got {self.images.dtype} "
                             f"{self.images.shape}")
        n = len(self.images)
        if self.labels.shape != (n,):
            raise ValueError(f"{self.name}: {n} images but labels shape {self.labels.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise LabelError(f"{self.name}: labels outside 0..{len(self.classes) - 1}")
        if self.soft_labels is not None:
            self.soft_labels = np.asarray(self.soft_labels, dtype=np.float32)
            if self.soft_labels.shape != (n, len(self.classes)):
                raise ValueError(f"{self.name}: soft labels shape {self.soft_labels.shape} != {(n, len(self.classes))}")
        if self.return_soft and self.soft_labels is None:
            raise ValueError(f"{self.name}: return_soft needs soft labels (only FER+ has votes)")
        if not self.ids:
            self.ids = [f"{self.name}#{i}" for i in range(n)]
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        img = self.images[i]
        x = self.transform(img) if self.transform is not None else to_tensor(img)
        if self.return_soft:
            assert self.soft_labels is not None
            return x, int(self.labels[i]), torch.from_numpy(self.soft_labels[i])
        return x, int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """1 for gray images, 3 for RGB."""
        return 1 if self.images.ndim == 3 else 3

    def class_counts(self) -> np.ndarray:
        """Samples per class, int64 ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, index: np.ndarray | Sequence[int]) -> "FERDataset":
        """A new dataset with the rows in ``index`` (arrays are copied)."""
        index = np.asarray(index, dtype=np.int64)
        return FERDataset(
            images=self.images[index], labels=self.labels[index], classes=self.classes,
            soft_labels=None if self.soft_labels is None else self.soft_labels[index],
            ids=[self.ids[i] for i in index], transform=self.transform, return_soft=self.return_soft,
            name=self.name, meta=self._meta_rows(index),
        )

    def _meta_rows(self, index: np.ndarray) -> dict[str, Any]:
        """``meta`` with per-sample arrays (length N, e.g. ``face_found``, ``source``) cut to ``index``."""
        n = len(self)
        return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v)
                for k, v in self.meta.items()}

    def remap(self, classes: Sequence[str], drop_missing: bool = False) -> "FERDataset":
        """The same samples with labels re-indexed into ``classes`` (matched by canonical name).

        Args:
            classes: the target label order, e.g. a model's ``pretrained_cfg.classes``.
            drop_missing: drop samples whose class is not in ``classes`` (else raise ``LabelError``).
        """
        classes = tuple(canonical_name(c) for c in classes)
        lut = remap_indices(self.classes, classes)
        new = lut[self.labels] if len(self.labels) else self.labels.copy()
        keep = new >= 0
        if not keep.all():
            missing = sorted({self.classes[j] for j in np.unique(self.labels[~keep])})
            if not drop_missing:
                raise LabelError(f"{self.name}: classes {missing} are not in the target {classes}")
            log.warning("%s: dropping %d samples of classes %s absent from %s", self.name, int((~keep).sum()),
                        missing, classes)
        soft = None
        if self.soft_labels is not None:
            soft = np.zeros((len(self.labels), len(classes)), dtype=np.float32)
            for j, t in enumerate(lut):
                if t >= 0:
                    soft[:, t] = self.soft_labels[:, j]
            sums = soft.sum(1, keepdims=True)
            soft = np.divide(soft, sums, out=np.zeros_like(soft), where=sums > 0)
        idx = np.flatnonzero(keep)
        return FERDataset(
            images=self.images[idx], labels=new[idx], classes=classes,
            soft_labels=None if soft is None else soft[idx], ids=[self.ids[i] for i in idx],
            transform=self.transform, return_soft=self.return_soft and soft is not None,
            name=self.name, meta=self._meta_rows(idx),
        )

    def summary(self) -> str:
        """One line: name, size, shape and per-class counts."""
        counts = ", ".join(f"{c} {n}" for c, n in zip(self.classes, self.class_counts()))
        return f"{self.name}: {len(self)} images {tuple(self.images.shape[1:])} uint8; {counts}"
