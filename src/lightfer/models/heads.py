"""Classifier heads shared by every architecture: pooling, optional squeeze-excitation, dropout, FC.

The SE head follows seed 003 (Swin + SE, after Hu et al., "Squeeze-and-Excitation Networks",
CVPR 2018), applied to the *pooled* feature vector: ``f * sigmoid(W2 relu(W1 f))`` before the
classifier. ``ClassifierHead(kind="se")`` gives it to any backbone (``create_model(name, head="se")``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS: tuple[str, ...] = ("linear", "se")


class SqueezeExcite1d(nn.Module):
    """Channel-wise excitation of a pooled feature vector ``(B, C) -> (B, C)``."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, dim // reduction)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, dim)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale ``x`` ``(B, C)`` by gates in (0, 1) computed from itself."""
        return x * self.gate(self.fc2(self.act(self.fc1(x))))


def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, side, side)``, bilinear, antialiased when shrinking: the trainer's resize
    (:func:`lightfer.train.data.to_model_input`) and the one inside models built with ``resample_to``, so that a
    model trained on resized crops is served the very same pixels. Unchanged when already that size."""
    if tuple(x.shape[-2:]) == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=side < x.shape[-1])


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Average ``(B, C, H, W)`` maps or ``(B, N, C)`` tokens to ``(B, C)``; ``(B, C)`` passes through."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    if x.ndim == 2:
        return x
    raise ValueError(f"cannot pool a feature of shape {tuple(x.shape)}")


class ClassifierHead(nn.Module):
    """Pool -> [SE] -> dropout -> Linear.

    Args:
        in_features: channels of the backbone feature.
        num_classes: outputs (0 gives an identity classifier, i.e. pooled features).
        kind: ``"linear"`` or ``"se"`` (squeeze-excitation on the pooled vector, seed 003).
        drop_rate: dropout before the classifier.
        se_reduction: bottleneck ratio of the SE block.
    """

    def __init__(
        self, in_features: int, num_classes: int, *, kind: str = "linear", drop_rate: float = 0.0, se_reduction: int = 4
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {kind!r}; choose one of {HEAD_KINDS}")
        self.kind = kind
        self.in_features = in_features
        self.se = SqueezeExcite1d(in_features, se_reduction) if kind == "se" else nn.Identity()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features ``(B, C, H, W)`` / ``(B, N, C)`` -> logits ``(B, K)`` (or ``(B, C)`` with ``pre_logits``)."""
        x = self.drop(self.se(global_pool(x)))
        return x if pre_logits else self.fc(x)
