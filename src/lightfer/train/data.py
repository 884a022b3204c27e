"""Training data plumbing: dataset building from the config, a learnable synthetic task, and
batch-level augmentation + model-input conversion in torch ops (as TRAINING_NOTES.md advises:
whole batches are augmented at once, then resized and normalised for each network).

Datasets yield ``(image (C, H, W) float in [0, 1], label)``, ``(image, label, soft (K,))`` or
``(image, soft (K,))``; :class:`Indexed` prepends the sample index (for precomputed teacher logits).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightfer.models.heads import resize_square
from lightfer.train.config import AugmentConfig, DataConfig

log = logging.getLogger(__name__)

__all__ = ["SyntheticFER", "Indexed", "TensorBatches", "build_datasets", "split_tensors", "augment_batch",
           "mix_batch", "Mix", "to_model_input", "split_batch"]


class SyntheticFER(Dataset):
    """A learnable toy task: each class is a fixed smooth pattern (a random 4×4 grid upsampled, around a
    class-specific brightness), each sample that pattern plus Gaussian noise, clipped to [0, 1].
    Deterministic given ``seed``; chance accuracy is 1/num_classes.

    Args:
        size: number of samples.
        num_classes: classes (patterns).
        image_size: side of the square images.
        channels: 1 or 3.
        noise: noise std.
        seed: pattern and noise seed (use the same ``pattern_seed`` for train and val).
    """

    def __init__(self, size: int = 512, num_classes: int = 7, image_size: int = 32, channels: int = 1,
                 noise: float = 0.25, seed: int = 0, pattern_seed: int = 1234) -> None:
        g = torch.Generator().manual_seed(pattern_seed)
        level = torch.linspace(0.25, 0.75, num_classes)[torch.randperm(num_classes, generator=g)]
        coarse = level.view(-1, 1, 1, 1) + 0.25 * (torch.rand(num_classes, channels, 4, 4, generator=g) - 0.5)
        self.patterns = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
        gs = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (size,), generator=gs)
        self.noise = torch.randn(size, channels, image_size, image_size, generator=gs) * noise
        self.classes = tuple(f"class_{i}" for i in range(num_classes))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        y = int(self.labels[i])
        return (self.patterns[y] + self.noise[i]).clamp(0, 1), y


class Indexed(Dataset):
    """Wraps a dataset so items become ``(index, *item)``."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        item = self.ds[i]
        return (i, *item) if isinstance(item, (tuple, list)) else (i, item)


class IndexRange(Dataset):
    """``0 .. n-1`` as a dataset: a loader over it draws the very index batches (same generator use, same
    shuffle) that a loader with the same sampler settings draws over a dataset of length ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def split_tensors(ds: Dataset, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """A whole split stacked on ``device``, for :class:`TensorBatches`.

    Returns ``[images (N, C, H, W), labels (N,) int64 or soft (N, K)[, soft (N, K)]]``: the fields of the
    items in order. A :class:`~lightfer.data.FERDataset` without a per-item transform (or a ``Subset`` of one)
    keeps its images as uint8 (a quarter of the memory; converted per batch exactly as ``to_tensor`` does);
    any other dataset is read item by item and its items must not be random (no per-item augmentation)."""
    from lightfer.data.dataset import FERDataset

    base, index = ds, None
    if isinstance(ds, torch.utils.data.Subset):
        base, index = ds.dataset, np.asarray(ds.indices, dtype=np.int64)
    if isinstance(base, FERDataset):
        if base.transform is not None:
            raise ValueError(f"{base.name}: data.in_memory needs a dataset without a per-item transform "
                             "(augmentation runs on whole batches in training)")
        pick = (lambda a: a[index]) if index is not None else (lambda a: a)
        img = torch.from_numpy(np.ascontiguousarray(pick(base.images)))
        img = img.unsqueeze(1) if img.ndim == 3 else img.permute(0, 3, 1, 2)
        fields = [img.contiguous(), torch.from_numpy(pick(base.labels).astype(np.int64))]
        if base.return_soft:
            assert base.soft_labels is not None
            fields.append(torch.from_numpy(np.ascontiguousarray(pick(base.soft_labels))))
    else:
        from torch.utils.data import default_collate

        fields = list(default_collate([ds[i] for i in range(len(ds))]))  # type: ignore[arg-type]
    return [f.to(device) for f in fields]


class TensorBatches:
    """Training batches indexed from a split held as tensors on the training device (``data.in_memory``).

    Iterating yields ``(idx (B,), images (B, C, H, W) float in [0, 1], *other fields)`` — what a loader over
    :class:`Indexed` yields — in the order ``index_loader`` (a loader over :class:`IndexRange`) draws, without a
    per-item Python call, collation, worker processes or a host-to-device copy per batch.

    Args:
        index_loader: yields index batches ``(B,)``.
        fields: from :func:`split_tensors`; uint8 images are converted to float32 / 255 per batch.
    """

    def __init__(self, index_loader: DataLoader, fields: list[torch.Tensor]) -> None:
        self.index_loader = index_loader
        self.fields = fields

    def __len__(self) -> int:
        return len(self.index_loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        img, *rest = self.fields
        for idx in self.index_loader:
            i = idx.to(img.device, non_blocking=True)
            x = img[i]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
            yield (idx, x, *(f[i] for f in rest))


def dataset_classes(ds: Dataset) -> tuple[str, ...] | None:
    """Class names of a dataset if it declares them (``classes`` attribute)."""
    classes = getattr(ds, "classes", None)
    return tuple(classes) if classes is not None else None


def _limit(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    if hasattr(ds, "subset"):
        return ds.subset(list(range(n)))
    sub = torch.utils.data.Subset(ds, list(range(n)))
    sub.classes = dataset_classes(ds)  # type: ignore[attr-defined]
    return sub


def build_datasets(cfg: DataConfig, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Training and validation datasets named by ``cfg.spec`` (``synthetic`` or a ``lightfer.data`` spec)."""
    if cfg.spec == "synthetic":
        common = dict(num_classes=cfg.synthetic_classes, image_size=cfg.synthetic_image,
                      channels=cfg.synthetic_channels, noise=cfg.synthetic_noise)
        train: Dataset = SyntheticFER(size=cfg.synthetic_size, seed=seed * 2 + 1, **common)
        val: Dataset | None = SyntheticFER(size=max(1, cfg.synthetic_size // 2), seed=seed * 2 + 2, **common) \
            if cfg.val_split else None
    else:
        from lightfer.data import build_dataset

        soft = cfg.target == "soft"
        train = build_dataset(cfg.spec, cfg.train_split, return_soft=soft, balance=cfg.balance, seed=seed)
        val = None
        if cfg.val_split:
            val = build_dataset(cfg.spec, cfg.val_split, return_soft=soft, classes=train.classes)
        log.info("train: %s", getattr(train, "summary", lambda: len(train))())
    return _limit(train, cfg.limit_train), (None if val is None else _limit(val, cfg.limit_val))


def split_batch(batch: list[Any] | tuple[Any, ...], target: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(idx, image, label[, soft])`` or ``(idx, image, soft)`` → ``(idx (B,), images (B, C, H, W),
    training target (B,) or (B, K), hard labels (B,))``."""
    idx, x, *rest = batch
    if len(rest) == 1:
        y = rest[0]
        return idx, x, y, (y if y.ndim == 1 else y.argmax(dim=1))
    if len(rest) == 2:
        y, soft = rest
        return idx, x, (soft if target == "soft" else y), y
    raise ValueError(f"dataset items must be (image, label[, soft]); got {len(rest) + 1} fields")


def augment_batch(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Random flip / padded crop / rotation / erasing / pixel noise of ``(B, C, H, W)`` images in [0, 1].

    Random numbers come from torch's CPU generator (reproducible and device-independent)."""
    b, _, h, w = x.shape
    dev = x.device
    if cfg.hflip > 0:
        flip = (torch.rand(b) < cfg.hflip).to(dev)
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    if cfg.rotate > 0 or cfg.crop_pad > 0:
        ang = (torch.rand(b) * 2 - 1) * math.radians(cfg.rotate)
        tx = (torch.randint(-cfg.crop_pad, cfg.crop_pad + 1, (b,)).float() * 2 / w) if cfg.crop_pad else torch.zeros(b)
        ty = (torch.randint(-cfg.crop_pad, cfg.crop_pad + 1, (b,)).float() * 2 / h) if cfg.crop_pad else torch.zeros(b)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(dev, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.erase > 0:
        do = torch.rand(b) < cfg.erase
        eh = (torch.rand(b) * 0.3 + 0.1) * h
        ew = (torch.rand(b) * 0.3 + 0.1) * w
        cy, cx = torch.rand(b) * h, torch.rand(b) * w
        ys = torch.arange(h).view(1, h, 1)
        xs = torch.arange(w).view(1, 1, w)
        m = ((ys - cy.view(b, 1, 1)).abs() < eh.view(b, 1, 1) / 2) & ((xs - cx.view(b, 1, 1)).abs() < ew.view(b, 1, 1) / 2)
        m = m & do.view(b, 1, 1)
        x = x.masked_fill(m.unsqueeze(1).to(dev), 0.5)
    if cfg.noise > 0 and cfg.noise_std > 0:
        sigma = torch.rand(b) * cfg.noise_std * (torch.rand(b) < cfg.noise)
        x = (x + torch.randn(x.shape).to(dev, x.dtype) * sigma.view(b, 1, 1, 1).to(dev, x.dtype)).clamp(0.0, 1.0)
    return x


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed: image i is ``lam·x[i] + (1 − lam)·x[perm[i]]`` (mixup) or ``x[i]`` with a box of
    ``x[perm[i]]`` covering the share ``1 − lam`` of it (cutmix)."""

    perm: torch.Tensor  # (B,) int64
    lam: float


def mix_batch(x: torch.Tensor, cfg: AugmentConfig) -> tuple[torch.Tensor, Mix | None]:
    """Mixup / cutmix of ``(B, C, H, W)`` images with a shuffled copy of the batch, one λ ~ Beta(a, a) per batch
    (cutmix's λ is the share the box leaves, after clipping it to the image). Returns the images and the
    :class:`Mix` to mix the labels with, or ``None`` when the batch was left as it was.
    Random numbers come from torch's CPU generator."""
    kinds = [(k, a) for k, a in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if a > 0]
    b = x.shape[0]
    if not kinds or b < 2 or float(torch.rand(())) >= cfg.mix_prob:
        return x, None
    kind, a = kinds[int(torch.randint(len(kinds), ()))]
    lam = float(torch.distributions.Beta(a, a).sample())
    perm = torch.randperm(b)
    other = x[perm.to(x.device)]
    if kind == "mixup":
        return lam * x + (1.0 - lam) * other, Mix(perm, lam)
    h, w = x.shape[-2:]
    r = math.sqrt(1.0 - lam)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - int(h * r / 2), 0), min(cy + int(h * r / 2), h)
    x0, x1 = max(cx - int(w * r / 2), 0), min(cx + int(w * r / 2), w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
    return out, Mix(perm, 1.0 - (y1 - y0) * (x1 - x0) / (h * w))


def to_model_input(x: torch.Tensor, input_size: int | None, in_chans: int, mean: tuple[float, ...],
                   std: tuple[float, ...]) -> torch.Tensor:
    """``(B, C, H, W)`` in [0, 1] → the network input: channels converted (gray ↔ RGB, ITU-R 601 luma),
    resized to ``input_size`` (bilinear, antialiased) and normalised."""
    c = x.shape[1]
    if c == 3 and in_chans == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif c == 1 and in_chans == 3:
        x = x.expand(-1, 3, -1, -1)
    elif c != in_chans:
        raise ValueError(f"images have {c} channels; the model takes {in_chans}")
    if input_size is not None:
        x = resize_square(x, input_size)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s
