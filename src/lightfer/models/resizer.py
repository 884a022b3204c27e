"""Neural Resizer (seed 002): a learned front end that feeds low-resolution faces to any backbone.

Seed 002 (after Talebi & Milanfar, "Learning to Resize Images for Computer Vision Tasks", ICCV 2021,
and Vo et al.'s super-resolution pyramid): an optional spatial transformer (Jaderberg et al.,
"Spatial Transformer Networks", NeurIPS 2015), then

1. super-resolution up: bilinear x``scale`` + a residual conv refinement;
2. learn-to-resize down to the backbone's input: skip = bilinear resize; conv 7x7 -> LeakyReLU ->
   conv 1x1 -> BN, resized; ``r`` residual blocks (conv3x3-BN-LeakyReLU-conv3x3-BN); conv3x3-BN added
   to the resized features; a final conv to the image channels added to the bilinearly resized image.

``create_model(name, resizer=...)`` wraps any registered backbone (see :func:`attach_resizer`); the
wrapped model's ``pretrained_cfg.input_size`` becomes the resizer's input side (48 px by default).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightfer.models.registry import PretrainedCfg


@dataclass(frozen=True)
class ResizerCfg:
    """Options of :class:`NeuralResizer` (``create_model(..., resizer=dict(...))`` sets them)."""

    in_size: int = 48  # side of the low-resolution face fed to the wrapped model, px
    scale: float = 2.0  # super-resolution factor of stage 1
    filters: int = 16  # channels inside the resizer
    blocks: int = 1  # residual blocks r of the learn-to-resize stage
    stn: bool = False  # spatial transformer before everything


class STN(nn.Module):
    """Spatial transformer: a small CNN predicts an affine warp (initialised to identity)."""

    def __init__(self, in_chans: int, hidden: int = 32) -> None:
        super().__init__()
        self.loc = nn.Sequential(
            nn.Conv2d(in_chans, 8, 5, 2, 2), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(nn.Linear(16 * 4 * 4, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 6))
        nn.init.zeros_(self.fc[2].weight)
        with torch.no_grad():
            self.fc[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> affine matrices ``(B, 2, 3)`` in normalised coordinates."""
        small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return self.fc(self.loc(small).flatten(1)).reshape(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> warped ``(B, C, H, W)`` (border padding)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])  # python ints: constants when traced for ONNX
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack((gx, gy, torch.ones_like(gx)), dim=-1).reshape(1, h * w, 3)  # (1, HW, 3)
        grid = (base @ self.theta(x).transpose(1, 2)).reshape(-1, h, w, 2)  # same as F.affine_grid
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class NeuralResizer(nn.Module):
    """``(B, C, h, w)`` low-resolution faces -> ``(B, C, out_size, out_size)`` backbone input.

    At initialisation the learned residuals are small, so the output is close to bilinear resizing.
    """

    def __init__(self, in_chans: int, out_size: int, cfg: ResizerCfg = ResizerCfg()) -> None:
        super().__init__()
        f = cfg.filters
        self.out_size, self.scale, self.cfg = int(out_size), float(cfg.scale), cfg
        self.stn = STN(in_chans) if cfg.stn else nn.Identity()
        self.sr = nn.Sequential(
            nn.Conv2d(in_chans, f, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, f, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, in_chans, 3, 1, 1),
        )
        self.head = nn.Sequential(
            nn.Conv2d(in_chans, f, 7, 1, 3), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, f, 1), nn.BatchNorm2d(f),
        )
        self.blocks = nn.Sequential(*(_ResBlock(f) for _ in range(cfg.blocks)))
        self.tail = nn.Sequential(nn.Conv2d(f, f, 3, 1, 1, bias=False), nn.BatchNorm2d(f))
        self.out = nn.Conv2d(f, in_chans, 3, 1, 1)
        for conv in (self.sr[-1], self.out):  # start near plain bilinear resizing
            nn.init.normal_(conv.weight, std=1e-3)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C, S, S)`` with S = ``out_size``."""
        x = self.stn(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        up_size = (int(round(h * self.scale)), int(round(w * self.scale)))
        # scale 1: no resampling (bilinear at the same size is the identity; skipping it saves an ONNX Resize)
        up = x if up_size == (h, w) else F.interpolate(x, size=up_size, mode="bilinear", align_corners=False)
        up = up + self.sr(up)  # stage 1: super-resolution
        size = (self.out_size, self.out_size)
        skip = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
        feat = F.interpolate(self.head(up), size=size, mode="bilinear", align_corners=False)
        feat = feat + self.tail(self.blocks(feat))  # stage 2: learn to resize
        return skip + self.out(feat)


class ResizedModel(nn.Module):
    """``backbone(resizer(x))`` with the backbone's ``forward_features`` / ``forward_head`` split."""

    def __init__(self, resizer: NeuralResizer, backbone: nn.Module) -> None:
        super().__init__()
        self.resizer = resizer
        self.backbone = backbone
        self.num_features = getattr(backbone, "num_features", None)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Low-res images ``(B, C, h, w)`` -> the backbone's stage tokens."""
        return self.backbone.forward_stages(self.resizer(x))

    def forward_features(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """Low-res images ``(B, C, h, w)`` -> the backbone's features."""
        return self.backbone.forward_features(self.resizer(x), **kwargs)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Backbone features -> logits ``(B, K)``."""
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Low-res images ``(B, C, h, w)`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


def resizer_cfg(spec: bool | str | dict[str, Any] | ResizerCfg) -> ResizerCfg:
    """Parse ``create_model(..., resizer=spec)``: True, ``"stn"``, a dict of :class:`ResizerCfg` fields, or one."""
    if isinstance(spec, ResizerCfg):
        return spec
    if spec is True:
        return ResizerCfg()
    if spec == "stn":
        return ResizerCfg(stn=True)
    if isinstance(spec, dict):
        names = {f.name for f in dataclasses.fields(ResizerCfg)}
        unknown = set(spec) - names
        if unknown:
            raise ValueError(f"unknown resizer options {sorted(unknown)}; known: {sorted(names)}")
        return ResizerCfg(**spec)
    raise ValueError(f"resizer must be True, 'stn', a dict or a ResizerCfg, got {spec!r}")


def attach_resizer(
    model: nn.Module, cfg: PretrainedCfg, spec: bool | str | dict[str, Any] | ResizerCfg
) -> tuple[ResizedModel, PretrainedCfg]:
    """Wrap ``model`` (input side ``cfg.input_size``) with a Neural Resizer; the new config's input is ``in_size``."""
    rcfg = resizer_cfg(spec)
    wrapped = ResizedModel(NeuralResizer(cfg.in_chans, cfg.input_size, rcfg), model)
    return wrapped, dataclasses.replace(cfg, input_size=rcfg.in_size)
