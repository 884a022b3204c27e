"""Probability-averaging ensembles of registered classifiers (the "accurate" choice: several students at once).

An :class:`Ensemble` runs every member on the same input and returns the log of their mean softmax, so that
anything that applies a softmax to a model's output (the classifier, evaluation, ONNX export) gets the mean
probability. Members share one input crop (size, channels, crop mode and margin), which
:func:`lightfer.models.shipped.ship_ensemble` checks when it builds a shipped ensemble. They may differ in input
normalisation: the ensemble takes its first member's, and a member trained with another mean / std gets
``x * scale + shift`` per channel before its own forward (``input_affine``; e.g. a dlib ResNet with a 0.5 / 0.5
ShuffleNet). The affine is an exact re-normalisation, so each member sees the input it was trained on.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightfer.models.registry import _REGISTRY, _accepts

__all__ = ["Ensemble", "build_ensemble", "renormalize_affine"]


Affine = tuple[list[float], list[float]]


def renormalize_affine(mean: Sequence[float], std: Sequence[float], member_mean: Sequence[float],
                       member_std: Sequence[float]) -> Affine | None:
    """Per-channel ``(scale, shift)`` taking an input normalised with ``mean`` / ``std`` to one normalised with
    ``member_mean`` / ``member_std`` (``(x * std + mean - member_mean) / member_std``); ``None`` when they are the
    same statistics (to 1e-9), so that members needing no change run on the input as it comes."""
    if len(mean) != len(member_mean) or len(std) != len(member_std) or len(mean) != len(std):
        raise ValueError(f"normalisation statistics of different channel counts: {list(mean)} / {list(std)} vs "
                         f"{list(member_mean)} / {list(member_std)}")
    scale = [float(s) / float(ms) for s, ms in zip(std, member_std)]
    shift = [(float(m) - float(mm)) / float(ms) for m, mm, ms in zip(mean, member_mean, member_std)]
    if all(abs(a - 1.0) <= 1e-9 for a in scale) and all(abs(b) <= 1e-9 for b in shift):
        return None
    return scale, shift


class Ensemble(nn.Module):
    """``(B, C, S, S)`` images -> ``(B, K)`` log mean probability of the members (log-softmax-like logits).

    ``input_affine[i]`` (``None`` or per-channel ``(scale, shift)``, see :func:`renormalize_affine`) re-normalises
    the input for member ``i``; kept as non-persistent buffers, so state dicts hold the members' weights only."""

    def __init__(self, members: list[nn.Module], input_affine: Sequence[Affine | None] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        affine = list(input_affine) if input_affine is not None else [None] * len(members)
        if len(affine) != len(members):
            raise ValueError(f"{len(affine)} input affines for {len(members)} ensemble members")
        self.members = nn.ModuleList(members)
        self._affine_idx: list[int] = []
        for i, a in enumerate(affine):
            if a is None:
                continue
            scale, shift = (torch.tensor([float(v) for v in t]).view(1, -1, 1, 1) for t in a)
            if scale.shape != shift.shape:
                raise ValueError(f"ensemble member {i}: scale and shift of different lengths")
            self.register_buffer(f"affine_scale_{i}", scale, persistent=False)
            self.register_buffer(f"affine_shift_{i}", shift, persistent=False)
            self._affine_idx.append(i)

    def member_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's input ``(B, C, S, S)`` as member ``i`` takes it (re-normalised where its statistics differ)."""
        if i not in self._affine_idx:
            return x
        scale, shift = getattr(self, f"affine_scale_{i}"), getattr(self, f"affine_shift_{i}")
        return x * scale.to(x.dtype) + shift.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, S, S)`` -> ``log(mean_m softmax(member_m(x)))`` of shape ``(B, K)``."""
        probs = torch.stack([m(self.member_input(i, x)).float().softmax(-1)
                             for i, m in enumerate(self.members)]).mean(0)
        return probs.clamp_min(1e-8).log()


def build_ensemble(num_classes: int = 7, in_chans: int = 1, *, members: list[dict[str, Any]] | None = None,
             img_size: int | None = None, **kwargs: Any) -> Ensemble:
    """An :class:`Ensemble` of ``members``: ``[{"architecture": name, "kwargs": {...}}, ...]``, each built with the
    same ``num_classes``, ``in_chans`` and (where the architecture takes it) ``img_size``; a member's optional
    ``"input_affine": {"scale": [...], "shift": [...]}`` re-normalises the input for it.

    Not a registered architecture itself (it has no standalone form): shipped ensembles (``"architecture":
    "ensemble"`` in their JSON) are registered under their own names by :mod:`lightfer.models.shipped`."""
    if not members:
        raise ValueError("ensemble: give members=[{'architecture': name, 'kwargs': {...}}, ...]")
    nets, affine = [], []
    for spec in members:
        arch = spec["architecture"]
        if arch not in _REGISTRY:
            raise ValueError(f"ensemble member {arch!r} is not a registered architecture")
        fn = _REGISTRY[arch].fn
        mk = {**kwargs, **dict(spec.get("kwargs", {}))}
        if img_size is not None and _accepts(fn, "img_size"):
            mk.setdefault("img_size", img_size)
        nets.append(fn(num_classes=num_classes, in_chans=in_chans, **mk))
        a = spec.get("input_affine")
        affine.append((list(a["scale"]), list(a["shift"])) if a else None)
    return Ensemble(nets, affine)
