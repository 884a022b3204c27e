"""Probability-averaging ensembles of registered classifiers (the "accurate" choice: several students at once).

An :class:`Ensemble` runs every member on the same input and returns the log of their mean softmax, so that
anything that applies a softmax to a model's output (the classifier, evaluation, ONNX export) gets the mean
probability. Members share one input: the same crop size, channels and normalisation, which
:func:`lightfer.models.shipped.ship_ensemble` checks when it builds a shipped ensemble from checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightfer.models.registry import _REGISTRY, _accepts

__all__ = ["Ensemble", "build_ensemble"]


class Ensemble(nn.Module):
    """``(B, C, S, S)`` images -> ``(B, K)`` log mean probability of the members (log-softmax-like logits)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, S, S)`` -> ``log(mean_m softmax(member_m(x)))`` of shape ``(B, K)``."""
        probs = torch.stack([m(x).float().softmax(-1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-8).log()


def build_ensemble(num_classes: int = 7, in_chans: int = 1, *, members: list[dict[str, Any]] | None = None,
             img_size: int | None = None, **kwargs: Any) -> Ensemble:
    """An :class:`Ensemble` of ``members``: ``[{"architecture": name, "kwargs": {...}}, ...]``, each built with the
    same ``num_classes``, ``in_chans`` and (where the architecture takes it) ``img_size``.

    Not a registered architecture itself (it has no standalone form): shipped ensembles (``"architecture":
    "ensemble"`` in their JSON) are registered under their own names by :mod:`lightfer.models.shipped`."""
    if not members:
        raise ValueError("ensemble: give members=[{'architecture': name, 'kwargs': {...}}, ...]")
    nets = []
    for spec in members:
        arch = spec["architecture"]
        if arch not in _REGISTRY:
            raise ValueError(f"ensemble member {arch!r} is not a registered architecture")
        fn = _REGISTRY[arch].fn
        mk = {**kwargs, **dict(spec.get("kwargs", {}))}
        if img_size is not None and _accepts(fn, "img_size"):
            mk.setdefault("img_size", img_size)
        nets.append(fn(num_classes=num_classes, in_chans=in_chans, **mk))
    return Ensemble(nets)
