"""RetinaFace with a MobileNet-0.25 backbone (Deng et al., "RetinaFace: Single-stage Dense Face
Localisation in the Wild", CVPR 2020).

The module layout and parameter names follow the widely used PyTorch re-implementation whose
WIDER FACE weights (``mobilenet0.25_Final.pth``) we load unchanged: backbone ``body.stage1..3``,
``fpn``, ``ssh1..3`` and per-level ``ClassHead`` / ``BboxHead`` / ``LandmarkHead``.

Input: ``(B, 3, H, W)`` float, **BGR** channel order with the means (104, 117, 123) subtracted
(what the weights were trained on; :mod:`lightfer.detection.detector` converts from RGB uint8).
Output: ``loc (B, A, 4)``, ``conf (B, A, 2)`` softmax scores, ``landms (B, A, 10)`` where
``A`` is the number of priors (:func:`lightfer.detection.box_utils.prior_boxes`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ANCHORS_PER_CELL = 2


def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """3x3 conv + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + BN."""
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise-separable block: dw 3x3 + BN + LeakyReLU, pw 1x1 + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1x025(nn.Module):
    """MobileNet-v1 at width 0.25; returns the three stage outputs (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),  # /2
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),  # /4
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),  # /8
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2),  # /16
            *[conv_dw(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))  # /32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> ``[(B, 64, H/8, W/8), (B, 128, H/16, W/16), (B, 256, H/32, W/32)]``."""
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


class FPN(nn.Module):
    """Top-down feature pyramid over three levels."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels[0], out_channels, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Three maps in, three ``out_channels`` maps of the same sizes out."""
        o1 = self.output1(feats[0])
        o2 = self.output2(feats[1])
        o3 = self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Single Stage Headless context module: parallel 3x3, 5x5 and 7x7 (stacked 3x3) branches."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        assert out_channel % 4 == 0
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting ``per_anchor`` values for each of the anchors of a cell."""

    def __init__(self, in_channels: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_channels, ANCHORS_PER_CELL * per_anchor, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, H*W*anchors, per_anchor)`` in (row, col, anchor) order."""
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """RetinaFace MobileNet-0.25: backbone -> FPN -> SSH -> class / box / landmark heads."""

    def __init__(self, in_channels_list: tuple[int, int, int] = (64, 128, 256), out_channels: int = 64) -> None:
        super().__init__()
        self.body = MobileNetV1x025()
        self.fpn = FPN(list(in_channels_list), out_channels)
        self.ssh1 = SSH(out_channels, out_channels)
        self.ssh2 = SSH(out_channels, out_channels)
        self.ssh3 = SSH(out_channels, out_channels)
        self.ClassHead = nn.ModuleList([_Head(out_channels, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(out_channels, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(out_channels, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` BGR mean-subtracted -> ``loc (B, A, 4)``, ``conf (B, A, 2)``, ``landms (B, A, 10)``."""
        fpn = self.fpn(self.body(x))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms


def load_retinaface(path: str) -> RetinaFace:
    """Build the network and load the original WIDER FACE weights (``weights_only=True``), in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("body.fc") and not k.startswith("body.avg")}
    model = RetinaFace()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: weights do not fit RetinaFace (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
