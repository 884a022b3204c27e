"""Tiny models for the trainer tests (not registered: the registry stays the product's)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lightfer.models.registry import PretrainedCfg


class TinyNet(nn.Module):
    """Two strided convs (+BN, dropout) → GAP → linear; ``features`` is hookable for manifold distillation."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, width: int = 8, size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * width, num_classes)
        self.pretrained_cfg = PretrainedCfg(input_size=size, in_chans=in_chans,
                                            classes=tuple(f"class_{i}" for i in range(num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` → logits ``(B, K)``."""
        return self.fc(self.drop(self.features(x).mean((2, 3))))


@pytest.fixture
def tiny() -> type[TinyNet]:
    """The TinyNet class (build fresh instances after seeding)."""
    return TinyNet
