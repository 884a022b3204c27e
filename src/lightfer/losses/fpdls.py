"""Prior-distribution label smoothing (PDLS) and its focal form F-PDLS (seed 002: Neural Resizer +
F-PDLS for transformer FER; PDLS after Zhang et al., focal term after Lin et al., ICCV 2017).

With one-hot t for the true class k, a prior distribution d_k over classes and p = softmax(z):

    L_PDLS   = −Σ_c (α·t_c + (1 − α)·d_{k,c}) · log p_c
    L_F-PDLS = −Σ_c (1 − p_c)^γ · (α·t_c + (1 − α)·d_{k,c}) · log p_c

The prior matrix D (C, C) has row k = d_k. Builders: :func:`uniform_prior` (PDLS is then label-smoothed
CE with ε = 1 − α), :func:`prior_from_votes` (FERPlus annotator votes), :func:`prior_from_confusion`
(a model's confusion matrix on the training set, see :func:`confusion_matrix`).
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "FPDLSLoss", "uniform_prior", "prior_from_votes", "prior_from_confusion", "prior_from_model", "confusion_matrix",
]


def _normalise_rows(m: torch.Tensor, what: str) -> torch.Tensor:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{what} must be a square (C, C) matrix, got shape {tuple(m.shape)}")
    if (m < 0).any():
        raise ValueError(f"{what} has negative entries")
    s = m.sum(dim=1, keepdim=True)
    if (s <= 0).any():
        empty = torch.nonzero(s.squeeze(1) <= 0).flatten().tolist()
        raise ValueError(f"{what}: rows {empty} sum to zero (classes with no samples?)")
    return m / s


def _fill_empty_rows(acc: torch.Tensor, what: str) -> torch.Tensor:
    """Rows of classes without samples become uniform (they are never a target, so any row works)."""
    empty = acc.sum(dim=1) <= 0
    if empty.any():
        log.warning("%s: classes %s have no samples; their prior rows are uniform", what,
                    torch.nonzero(empty).flatten().tolist())
        acc = acc.clone()
        acc[empty] = 1.0
    return acc


def uniform_prior(num_classes: int) -> torch.Tensor:
    """``(C, C)`` prior with every row uniform (ordinary label smoothing)."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    return torch.full((num_classes, num_classes), 1.0 / num_classes)


def prior_from_votes(votes: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Prior from annotator votes: row k = mean vote distribution of the samples labelled k.

    Args:
        votes: ``(N, C)`` vote counts per sample (FERPlus: the 8 emotion columns).
        labels: ``(N,)`` class of each sample; default the majority vote (first maximum).

    Returns:
        ``(C, C)`` row-stochastic matrix (uniform rows for classes without samples).
    """
    v = torch.as_tensor(np.asarray(votes), dtype=torch.float64)
    if v.ndim != 2:
        raise ValueError(f"votes must be (N, C), got shape {tuple(v.shape)}")
    if (v < 0).any():
        raise ValueError("votes must be non-negative counts or distributions")
    s = v.sum(dim=1, keepdim=True)
    keep = s.squeeze(1) > 0
    dist = v[keep] / s[keep]
    y = v[keep].argmax(dim=1) if labels is None else torch.as_tensor(np.asarray(labels)).long()[keep]
    c = v.shape[1]
    if y.numel() and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must be in [0, {c}), got range [{int(y.min())}, {int(y.max())}]")
    acc = torch.zeros(c, c, dtype=torch.float64).index_add_(0, y, dist)
    return _normalise_rows(_fill_empty_rows(acc, "vote prior"), "vote prior").float()


def confusion_matrix(logits_or_preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` counts, row = true class, column = predicted; accepts ``(N, C)`` logits or ``(N,)`` predictions."""
    pred = logits_or_preds.argmax(dim=1) if logits_or_preds.ndim == 2 else logits_or_preds
    idx = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).float()


def prior_from_confusion(conf: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Prior from a confusion matrix (row = true class): each row normalised to sum to 1; rows of
    classes without samples become uniform."""
    m = torch.as_tensor(np.asarray(conf), dtype=torch.float64)
    if m.ndim == 2 and m.shape[0] == m.shape[1] and not (m < 0).any():
        m = _fill_empty_rows(m, "confusion matrix")
    return _normalise_rows(m, "confusion matrix").float()


@torch.no_grad()
def prior_from_model(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> torch.Tensor:
    """Prior from ``model``'s confusion matrix over ``(images (B, C, H, W), labels (B,))`` batches."""
    was = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes)
    dev = next(model.parameters()).device
    for x, y in batches:
        conf += confusion_matrix(model(x.to(dev)).float().cpu(), y, num_classes)
    model.train(was)
    return prior_from_confusion(conf)


class FPDLSLoss(nn.Module):
    """F-PDLS (γ > 0) or PDLS (γ = 0) with a fixed ``(C, C)`` prior; mean over the batch.

    Args:
        prior: row-stochastic ``(C, C)`` matrix, row k = d_k (rows are renormalised).
        alpha: weight of the one-hot target (α = 1 is plain CE when γ = 0).
        gamma: focal exponent on (1 − p_c).
    """

    def __init__(self, prior: torch.Tensor, alpha: float = 0.9, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.register_buffer("prior", _normalise_rows(torch.as_tensor(prior, dtype=torch.float32), "prior"))
        self.alpha, self.gamma = float(alpha), float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits (B, C)``, ``target (B,)`` class indices → scalar."""
        c = self.prior.shape[0]
        if logits.ndim != 2 or logits.shape[1] != c:
            raise ValueError(f"logits must be (B, {c}), got {tuple(logits.shape)}")
        if target.ndim != 1:
            raise ValueError("F-PDLS needs integer class targets (B,); use soft-label CE for distributions")
        y = target.long()
        w = self.alpha * F.one_hot(y, c).float() + (1.0 - self.alpha) * self.prior[y]
        logp = F.log_softmax(logits.float(), dim=1)
        if self.gamma > 0:
            w = w * (1.0 - logp.exp()).clamp_min(0).pow(self.gamma)
        return -(w * logp).sum(dim=1).mean()
