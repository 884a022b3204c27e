"""Optimizer and LR-schedule builders for the trainer (SGD / AdamW, optional SAM; cosine with
warm-up, step, ReduceLROnPlateau), after torchvision's classification reference."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lightfer.optim.sam import SAM

__all__ = ["create_optimizer", "create_scheduler", "WarmupCosine", "param_groups_weight_decay"]


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights with decay; biases, norm scales and other 1-D parameters without."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    sam: bool = False,
    sam_rho: float = 0.05,
    sam_adaptive: bool = False,
    decay_norm_and_bias: bool = False,
) -> Optimizer:
    """``sgd`` or ``adamw`` over the model's trainable parameters, wrapped in :class:`SAM` if asked."""
    params: Any = (
        [p for p in model.parameters() if p.requires_grad]
        if decay_norm_and_bias
        else param_groups_weight_decay(model, weight_decay)
    )
    name = name.lower()
    if name == "sgd":
        base: Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                                          weight_decay=weight_decay)
    elif name == "adamw":
        base = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose sgd or adamw")
    return SAM(None, base, rho=sam_rho, adaptive=sam_adaptive) if sam else base


class WarmupCosine:
    """LR multiplier per iteration: linear warm-up from ``warmup_factor`` then cosine to ``min_factor``."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, warmup_factor: float = 0.01, min_factor: float = 0.0):
        self.total_steps, self.warmup_steps = max(1, int(total_steps)), int(warmup_steps)
        self.warmup_factor, self.min_factor = float(warmup_factor), float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / max(1, self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def create_scheduler(
    optimizer: Optimizer,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    min_lr_factor: float = 0.0,
    step_size: int = 10,
    gamma: float = 0.1,
    plateau_patience: int = 3,
    plateau_mode: str = "min",
) -> tuple[Any, str]:
    """Build the schedule; returns ``(scheduler, when)`` with ``when`` = ``"iter"``, ``"epoch"`` or
    ``"metric"`` (ReduceLROnPlateau, stepped with the validation metric) — or ``(None, "none")``."""
    name = name.lower()
    if name in ("none", "constant"):
        return None, "none"
    if name == "cosine":
        fn = WarmupCosine(epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch), min_factor=min_lr_factor)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "iter"
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch"
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=plateau_mode, factor=gamma,
                                                          patience=plateau_patience), "metric"
    raise ValueError(f"unknown scheduler {name!r}; choose cosine, step, plateau or none")
