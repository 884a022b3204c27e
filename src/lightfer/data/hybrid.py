"""Hybrid dataset (seed 003): several datasets merged into one label space, with class balancing.

Seed 003 merges FER2013, CK+ and AffectNet into eight classes and balances the training split
by augmenting minority classes up to the largest one. Both ways are offered here: a
``WeightedRandomSampler`` (no new images) and :func:`balance_by_augmentation` (new jittered
copies, as in the seed).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from lightfer.data.dataset import FERDataset
from lightfer.data.images import resize
from lightfer.data.labels import CANONICAL_CLASSES
from lightfer.data.transforms import Compose, RandomAffine, RandomHorizontalFlip, to_rgb

log = logging.getLogger(__name__)


def merge_datasets(parts: Sequence[FERDataset], classes: Sequence[str] | None = None, size: int | None = None,
                   gray: bool | None = None, drop_missing: bool = False) -> FERDataset:
    """Concatenate datasets in one label space and image format.

    Args:
        parts: datasets with canonical class names.
        classes: target label order (default: the union of the parts' classes, in canonical order).
        size: common square side (default: the largest among the parts).
        gray: force gray (True) / RGB (False); default gray only when every part is gray.
        drop_missing: drop samples of classes absent from ``classes`` instead of raising.
    """
    if not parts:
        raise ValueError("merge_datasets needs at least one dataset")
    if classes is None:
        union = {c for p in parts for c in p.classes}
        classes = tuple(c for c in CANONICAL_CLASSES if c in union)
    size = size or max(p.images.shape[1] for p in parts)
    if gray is None:
        gray = all(p.channels == 1 for p in parts)
    images, labels, ids, source, soft_parts = [], [], [], [], []
    for k, p in enumerate(parts):
        q = p.remap(classes, drop_missing=drop_missing)
        imgs = q.images
        if gray and imgs.ndim == 4:
            imgs = (imgs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
        elif not gray:
            imgs = to_rgb(imgs)
        if imgs.shape[1:3] != (size, size):
            imgs = np.stack([resize(im, size) for im in imgs]) if len(imgs) else imgs[:, :size, :size]
        images.append(imgs)
        labels.append(q.labels)
        ids.extend(f"{p.name}/{i}" for i in q.ids)
        source.append(np.full(len(q), k, np.int64))
        soft_parts.append(q.soft_labels)
    soft = None
    if all(s is not None for s in soft_parts):
        soft = np.concatenate(soft_parts)  # type: ignore[arg-type]
    ds = FERDataset(images=np.concatenate(images), labels=np.concatenate(labels), classes=tuple(classes),
                    soft_labels=soft, ids=ids, name="+".join(p.name for p in parts),
                    meta={"source": np.concatenate(source), "parts": [p.name for p in parts]})
    log.info("%s", ds.summary())
    return ds


def class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """Per-sample weights ``(N,)`` proportional to ``count(class) ** -power`` (1 = fully balanced)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.zeros(num_classes)
    w[counts > 0] = counts[counts > 0] ** -power
    return w[labels]


def balanced_sampler(dataset: FERDataset, num_samples: int | None = None, power: float = 1.0,
                     seed: int = 0) -> torch.utils.data.WeightedRandomSampler:
    """Sampler drawing classes (about) equally often, with replacement; pass it to a ``DataLoader``."""
    w = class_weights(dataset.labels, dataset.num_classes, power)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double),
                                                  num_samples or len(dataset), replacement=True, generator=g)


def balance_by_augmentation(dataset: FERDataset, target: int | None = None, seed: int = 0,
                            augment: Callable[[np.ndarray], np.ndarray] | None = None) -> FERDataset:
    """Add augmented copies of minority-class images until each class has ``target`` (default: the max count).

    Originals are kept; classes already at or above ``target`` are left as they are. The copies'
    ids end in ``~aug``.
    """
    rng = np.random.default_rng(seed)
    augment = augment or Compose([RandomHorizontalFlip(0.5, rng), RandomAffine(12.0, rng=rng)])
    counts = dataset.class_counts()
    target = int(target or counts.max())
    extra_idx: list[int] = []
    for c, n in enumerate(counts):
        if 0 < n < target:
            extra_idx.extend(rng.choice(np.flatnonzero(dataset.labels == c), target - n, replace=True).tolist())
    if not extra_idx:
        return dataset
    new = np.stack([augment(dataset.images[i]) for i in extra_idx])
    soft = None
    if dataset.soft_labels is not None:
        soft = np.concatenate([dataset.soft_labels, dataset.soft_labels[extra_idx]])
    out = FERDataset(images=np.concatenate([dataset.images, new]),
                     labels=np.concatenate([dataset.labels, dataset.labels[extra_idx]]), classes=dataset.classes,
                     soft_labels=soft, ids=dataset.ids + [dataset.ids[i] + "~aug" for i in extra_idx],
                     transform=dataset.transform, return_soft=dataset.return_soft, name=dataset.name + "~balanced",
                     meta=dict(dataset.meta))
    log.info("balanced by augmentation: %s", out.summary())
    return out
