"""ResNet18 and the EFF-ResNet18 teacher of T-SNet (seed 001).

ResNet: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), BasicBlock 2-2-2-2.
EFF-ResNet18: ResNet18 stem + layer1 + layer2, then two fine-grained feature extraction (FFE) modules,
global pooling, dropout and FC (seed 001, a symmetric Res2Net-style block; DESIGN.md §3).

Stems for small faces (``stem="auto"``, the default, picks from the input size):
  - ``"imagenet"``: conv 7x7/2 + max-pool 3x3/2 (total stride 4) — for inputs of 160 px and more;
  - ``"s2"``: conv 3x3/2, no max-pool (stride 2) — 64–159 px, so 112 px gives layer1 at 56x56 and
    layer2 at 28x28x128, the maps the ImageNet stem gives at 224 px (seed 001's FFE input);
  - ``"s1"``: conv 3x3/1, no max-pool (stride 1) — under 64 px (48 px FER2013 crops), ~4x the cost.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightfer.models.heads import ClassifierHead
from lightfer.models.registry import PretrainedCfg, register_model

STEMS: tuple[str, ...] = ("auto", "imagenet", "s2", "s1")


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias) -> BN [-> ReLU], 'same' padding."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=False)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=False) if (stride != 1 or cin != cout) else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, Cout, H/stride, W/stride)``."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class FFE(nn.Module):
    """Fine-grained feature extraction (seed 001): symmetric left/right cascades over ``n`` channel groups.

    ``X = conv3x3(x)`` split into X_1..X_n; ``Y^L_i = P^L_i(X_i + Y^L_{i-1})`` (i ascending),
    ``Y^R_i = P^R_i(X_i + Y^R_{i+1})`` (i descending), ``Y_i = Y^L_i + Y^R_i``; the concatenated Y_i
    are fused by a 1x1 conv and added to ``x``. Every conv is conv-BN-ReLU except the fuse (conv-BN);
    a ReLU follows the residual sum, as in a ResNet block.
    """

    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"FFE channels {channels} not divisible into {groups} groups")
        w = channels // groups
        self.groups = groups
        self.conv_in = conv_bn(channels, channels, 3)
        self.left = nn.ModuleList(conv_bn(w, w, 3) for _ in range(groups))
        self.right = nn.ModuleList(conv_bn(w, w, 3) for _ in range(groups))
        self.fuse = conv_bn(channels, channels, 1, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        xs = torch.chunk(self.conv_in(x), self.groups, dim=1)
        left: list[torch.Tensor] = []
        for i, p in enumerate(self.left):
            left.append(p(xs[i] if i == 0 else xs[i] + left[-1]))
        right: list[torch.Tensor] = [xs[0]] * self.groups
        prev = None
        for i in reversed(range(self.groups)):
            prev = self.right[i](xs[i] if prev is None else xs[i] + prev)
            right[i] = prev
        y = torch.cat([a + b for a, b in zip(left, right)], dim=1)
        return self.act(self.fuse(y) + x)


def _stem(kind: str, in_chans: int, img_size: int) -> nn.Sequential:
    if kind not in STEMS:
        raise ValueError(f"unknown stem {kind!r}; choose one of {STEMS}")
    if kind == "auto":
        kind = "imagenet" if img_size >= 160 else ("s2" if img_size >= 64 else "s1")
    if kind == "imagenet":
        return nn.Sequential(conv_bn(in_chans, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    return conv_bn(in_chans, 64, 3, 2 if kind == "s2" else 1)


class ResNet(nn.Module):
    """ResNet of BasicBlocks with an optional FFE tail (EFF-ResNet18): ``(B, C, S, S) -> (B, K)``.

    Args:
        layers: blocks per stage (ResNet18: 2-2-2-2; EFF-ResNet18: 2-2, stages 3-4 dropped).
        ffe: number of FFE modules after the last stage (seed 001: 2).
        stem: see the module docstring; ``img_size`` only chooses the ``"auto"`` stem.
        head: ``"linear"`` or ``"se"``.
    """

    def __init__(
        self, layers: tuple[int, ...] = (2, 2, 2, 2), *, in_chans: int = 1, num_classes: int = 7, img_size: int = 112,
        stem: str = "auto", ffe: int = 0, ffe_groups: int = 4, drop_rate: float = 0.0, head: str = "linear",
    ) -> None:
        super().__init__()
        self.stem = _stem(stem, in_chans, img_size)
        widths = [64, 128, 256, 512][: len(layers)]
        stages, cin = [], 64
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.ffe = nn.Sequential(*(FFE(cin, ffe_groups) for _ in range(ffe)))
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, kind=head, drop_rate=drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> outputs of every stage (and of the FFE tail) as tokens ``[(B, N_i, C_i)]``."""
        x = self.stem(x)
        outs = []
        for stage in list(self.stages) + ([self.ffe] if len(self.ffe) else []):
            x = stage(x)
            outs.append(x.flatten(2).transpose(1, 2))
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> feature maps ``(B, F, h, w)``."""
        return self.ffe(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Maps ``(B, F, h, w)`` -> logits ``(B, K)`` (pooled ``(B, F)`` with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


def _cfg(size: int, description: str) -> PretrainedCfg:
    return PretrainedCfg(input_size=size, in_chans=1, mean=(0.5,), std=(0.5,), crop_margin=0.0, description=description)


@register_model(_cfg(112, "ResNet18 (stem picked from input size: 3x3/2 at 112 px)"))
def resnet18(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ResNet:
    """Plain ResNet18."""
    kwargs.setdefault("img_size", 112)
    return ResNet((2, 2, 2, 2), in_chans=in_chans, num_classes=num_classes, **kwargs)


@register_model(_cfg(112, "EFF-ResNet18 teacher (seed 001): layer1-2 + 2 FFE, dropout 0.5"))
def eff_resnet18(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ResNet:
    """T-SNet teacher: ResNet18 stem + layer1-2 (28x28x128 at 112 px), two FFE modules, dropout 0.5, FC."""
    kwargs.setdefault("img_size", 112)
    kwargs.setdefault("drop_rate", 0.5)
    kwargs.setdefault("ffe", 2)
    return ResNet((2, 2), in_chans=in_chans, num_classes=num_classes, **kwargs)
