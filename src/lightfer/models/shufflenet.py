"""ShuffleNetV2, the T-SNet student (seed 001).

Implements Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design"
(ECCV 2018): channel split, two branches (identity | 1x1-dw3x3-1x1), concat and channel shuffle;
stride-2 units feed both branches. Width multipliers 0.5 / 1.0 / 1.5 / 2.0; x1.0 with 7 classes has
1.26M parameters (tested).

Stem (``stem="auto"`` picks from the input size, as :mod:`lightfer.models.resnet`): ``"imagenet"``
(conv 3x3/2 + max-pool, stride 4) from 160 px, ``"s2"`` (conv 3x3/2, stride 2) for 64–159 px, ``"s1"``
(stride 1) under 64 px — the stride-1 stem helped accuracy on 48 px FER2013 but costs ~4x
(``../shared/TRAINING_NOTES.md``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightfer.models.heads import ClassifierHead
from lightfer.models.rep import conv_bn
from lightfer.models.registry import PretrainedCfg, register_model

STAGE_OUT: dict[float, tuple[int, ...]] = {
    0.5: (24, 48, 96, 192, 1024),
    0.75: (24, 88, 176, 352, 1024),  # not in the ShuffleNetV2 paper: lightfer's width between the two it ships
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
STEMS: tuple[str, ...] = ("auto", "imagenet", "s2", "s1")


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """``(B, C, H, W)`` -> same shape, channels interleaved across ``groups``."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _branch(cin: int, cout: int, stride: int, rep: int = 0) -> nn.Sequential:
    return nn.Sequential(
        *conv_bn(cin, cout, 1, rep=rep), nn.ReLU(inplace=True),
        *conv_bn(cout, cout, 3, stride, groups=cout, rep=rep),
        *conv_bn(cout, cout, 1, rep=rep), nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits channels; stride 2 downsamples both branches. ``rep`` > 0 trains each
    ``Conv2d → BatchNorm2d`` pair as a :class:`~lightfer.models.rep.RepConvBN` of ``rep`` branches."""

    def __init__(self, cin: int, cout: int, stride: int, rep: int = 0) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 1 and cin != cout:
            raise ValueError("a stride-1 ShuffleNetV2 unit keeps the channel count")
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                *conv_bn(cin, cin, 3, stride, groups=cin, rep=rep),
                *conv_bn(cin, half, 1, rep=rep), nn.ReLU(inplace=True),
            )
            self.branch2 = _branch(cin, half, stride, rep)
        else:
            self.branch1 = nn.Identity()
            self.branch2 = _branch(half, half, 1, rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, Cout, H/stride, W/stride)``."""
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 classifier ``(B, C, S, S) -> (B, K)``; ``width`` in {0.5, 0.75, 1.0, 1.5, 2.0}.

    ``rep`` > 0 trains every ``Conv2d → BatchNorm2d`` pair (stem, units, conv5) as a MobileOne-style
    :class:`~lightfer.models.rep.RepConvBN` with ``rep`` parallel k×k branches plus the 1×1 scale and identity
    branches; :func:`lightfer.models.rep.reparameterize` folds them back, leaving the plain network (same weights
    keys, graph and speed). Loading a training checkpoint folds them (:func:`lightfer.train.load_model_from_checkpoint`)."""

    def __init__(
        self, width: float = 1.0, *, in_chans: int = 1, num_classes: int = 7, img_size: int = 112,
        stem: str = "auto", repeats: tuple[int, int, int] = (4, 8, 4), drop_rate: float = 0.0, head: str = "linear",
        rep: int = 0,
    ) -> None:
        super().__init__()
        if width not in STAGE_OUT:
            raise ValueError(f"unsupported width {width}; choose one of {sorted(STAGE_OUT)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        if stem == "auto":
            stem = "imagenet" if img_size >= 160 else ("s2" if img_size >= 64 else "s1")
        outs = STAGE_OUT[width]
        conv1 = nn.Sequential(*conv_bn(in_chans, outs[0], 3, 1 if stem == "s1" else 2, rep=rep), nn.ReLU(inplace=True))
        self.stem = nn.Sequential(conv1, nn.MaxPool2d(3, 2, 1)) if stem == "imagenet" else conv1
        stages, cin = [], outs[0]
        for n, cout in zip(repeats, outs[1:4]):
            stages.append(nn.Sequential(InvertedResidual(cin, cout, 2, rep),
                                        *(InvertedResidual(cout, cout, 1, rep) for _ in range(n - 1))))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = nn.Sequential(*conv_bn(cin, outs[4], 1, rep=rep), nn.ReLU(inplace=True))
        self.num_features = outs[4]
        self.head = ClassifierHead(outs[4], num_classes, kind=head, drop_rate=drop_rate)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> stage 2–4 outputs as tokens ``[(B, N_i, C_i)]``."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x.flatten(2).transpose(1, 2))
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> conv5 maps ``(B, F, h, w)``."""
        return self.conv5(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Maps ``(B, F, h, w)`` -> logits ``(B, K)`` (pooled ``(B, F)`` with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


def _make(width: float, num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> ShuffleNetV2:
    kwargs.setdefault("img_size", 112)
    return ShuffleNetV2(width, in_chans=in_chans, num_classes=num_classes, **kwargs)


def _cfg(width: float) -> PretrainedCfg:
    return PretrainedCfg(
        input_size=112, in_chans=1, mean=(0.5,), std=(0.5,), crop_margin=0.0,
        description=f"ShuffleNetV2 x{width} (T-SNet student), stem 3x3/2 at 112 px",
    )


@register_model(_cfg(0.5))
def shufflenet_v2_x0_5(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 x0.5."""
    return _make(0.5, num_classes, in_chans, kwargs)


@register_model(_cfg(0.75))
def shufflenet_v2_x0_75(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 x0.75 (stage widths 88 / 176 / 352, ~0.82M parameters with 7 classes): between x0.5 and x1.0."""
    return _make(0.75, num_classes, in_chans, kwargs)


@register_model(_cfg(1.0))
def shufflenet_v2_x1_0(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 x1.0 (seed 001's student, ~1.26M parameters with 7 classes)."""
    return _make(1.0, num_classes, in_chans, kwargs)


@register_model(_cfg(1.5))
def shufflenet_v2_x1_5(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 x1.5."""
    return _make(1.5, num_classes, in_chans, kwargs)


@register_model(_cfg(2.0))
def shufflenet_v2_x2_0(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 x2.0."""
    return _make(2.0, num_classes, in_chans, kwargs)
