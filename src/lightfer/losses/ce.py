"""Cross-entropy objectives: label smoothing (Szegedy et al., CVPR 2016) and soft targets.

Soft targets are per-sample class distributions, e.g. FERPlus annotator-vote distributions
(Barsoum et al., ICMI 2016). Both accept integer labels ``(B,)`` or distributions ``(B, C)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LabelSmoothingCE", "SoftTargetCE", "cross_entropy"]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits (B, C)`` against labels ``(B,)`` or distributions ``(B, C)``.

    With smoothing ε the target becomes ``(1 − ε)·t + ε/C`` (hard or soft t alike).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    if target.ndim == 1:
        return F.cross_entropy(logits, target.long(), label_smoothing=smoothing)
    if target.shape != logits.shape:
        raise ValueError(f"soft targets must be (B, C) = {tuple(logits.shape)}, got {tuple(target.shape)}")
    t = target.to(logits.dtype)
    if smoothing > 0:
        t = (1.0 - smoothing) * t + smoothing / logits.shape[1]
    return -(t * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class LabelSmoothingCE(nn.Module):
    """Cross-entropy with label smoothing ε (ε = 0 is plain CE)."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits (B, C)``, ``target (B,)`` int labels or ``(B, C)`` distributions → scalar."""
        return cross_entropy(logits, target, self.smoothing)


class SoftTargetCE(nn.Module):
    """Cross-entropy against per-sample distributions ``(B, C)``; rows are renormalised to sum to 1."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits (B, C)``, ``target (B, C)`` non-negative weights → scalar."""
        if target.ndim != 2:
            raise ValueError(f"SoftTargetCE needs (B, C) targets, got shape {tuple(target.shape)}")
        if (target < 0).any():
            raise ValueError("soft targets must be non-negative")
        s = target.sum(dim=1, keepdim=True)
        if (s <= 0).any():
            raise ValueError("every soft-target row needs a positive sum")
        return cross_entropy(logits, target / s)
