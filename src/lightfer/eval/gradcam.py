"""Grad-CAM for every classifier of the zoo, with forward/backward hooks (no torchvision).

Implements Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (ICCV 2017), as seed 001 uses it to show where T-SNet looks: for the class score
``y_k`` and the activations ``A`` of a chosen layer, ``w_c = mean_ij dy_k/dA_cij`` and
``CAM = ReLU(sum_c w_c A_c)``, upsampled to the input and scaled to [0, 1] per image.

Layers may give ``(B, C, h, w)`` CNN maps, ``(B, h, w, C)`` channels-last maps (SwinV2 stages and
blocks) or ``(B, N, C)`` transformer tokens, reshaped to a square ``sqrt(N) x sqrt(N)`` grid or to
``grid=(h, w)``. :func:`default_target_layer` picks the last spatial layer of each zoo model.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("auto", "nchw", "nhwc", "tokens")


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last layer with spatial output: Swin's last stage, a zoo CNN's features before pooling, else the last conv."""
    inner = getattr(model, "backbone", model)  # a Neural-Resizer-wrapped model explains its backbone
    for attr in ("stages", "features"):
        seq = getattr(inner, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            last = seq[-1]
            tail = [getattr(inner, a) for a in ("ffe", "conv5") if isinstance(getattr(inner, a, None), nn.Module)]
            tail = [t for t in tail if not (isinstance(t, nn.Sequential) and len(t) == 0)]
            return tail[-1] if tail else last
    convs = [m for m in inner.modules() if isinstance(m, nn.Conv2d)]  # any other CNN: its last conv
    if convs:
        return convs[-1]
    raise ValueError(f"cannot choose a Grad-CAM layer for {type(model).__name__}; pass target_layer")


def _is_channels_last(layer: nn.Module) -> bool:
    from lightfer.models.swinv2 import PatchEmbed, PatchMerging, SwinV2Block, SwinV2Stage

    return isinstance(layer, (SwinV2Stage, SwinV2Block, PatchMerging, PatchEmbed))


def _to_nchw(a: torch.Tensor, layout: str, grid: tuple[int, int] | None) -> torch.Tensor:
    want = 3 if layout == "tokens" else 4
    if a.ndim != want:
        raise ValueError(f"layout {layout!r} needs a {want}-D layer output, got shape {tuple(a.shape)}")
    if layout == "nchw":
        return a
    if layout == "nhwc":
        return a.permute(0, 3, 1, 2)
    b, n, c = a.shape
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} tokens are not a square grid; pass grid=(h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != n:
        raise ValueError(f"grid {grid} does not hold {n} tokens")
    return a.transpose(1, 2).reshape(b, c, grid[0], grid[1])


class GradCAM:
    """Grad-CAM on one layer of ``model``: ``cam(x, target) -> (B, H, W)`` maps in [0, 1].

    Args:
        model: a classifier ``(B, C, H, W) -> (B, K)``; put in eval mode while explaining.
        target_layer: the module whose output is explained (default :func:`default_target_layer`).
        layout: ``"auto"`` (4-D: channels-last for SwinV2 modules, else NCHW; 3-D: tokens), or force one.
        grid: ``(h, w)`` of a token layer when it is not square.
    """

    def __init__(
        self, model: nn.Module, target_layer: nn.Module | None = None, *, layout: str = "auto",
        grid: tuple[int, int] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        self.model = model
        self.layer = target_layer if target_layer is not None else default_target_layer(model)
        self.layout, self.grid = layout, grid

    def _layout(self, a: torch.Tensor) -> str:
        if self.layout != "auto":
            return self.layout
        if a.ndim == 3:
            return "tokens"
        if a.ndim == 4:
            return "nhwc" if _is_channels_last(self.layer) else "nchw"
        raise ValueError(f"Grad-CAM layer output has shape {tuple(a.shape)}; need 3-D tokens or 4-D maps")

    def __call__(self, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> maps ``(B, H, W)`` in [0, 1] for class ``target`` (default: predicted).

        Gradients are taken with ``torch.autograd.grad`` w.r.t. the layer output only, so no ``.grad``
        of the model's parameters is touched; the model's train/eval mode is restored.
        """
        seen: list[torch.Tensor] = []

        def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"Grad-CAM layer {type(module).__name__} must return a tensor")
            seen.append(output)

        was_training = self.model.training
        self.model.eval()
        handle = self.layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # the graph reaches the layer even with frozen weights
                logits = self.model(x)
                if not seen:
                    raise RuntimeError("the Grad-CAM layer was not reached by the forward pass")
                if target is None:
                    idx = logits.argmax(dim=1)
                else:
                    idx = torch.as_tensor(target, dtype=torch.long).reshape(-1).expand(logits.shape[0])
                if (idx < 0).any() or (idx >= logits.shape[1]).any():
                    raise ValueError(f"target {target} out of range for {logits.shape[1]} classes")
                act = seen[-1]
                (grad,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), act)
        finally:
            handle.remove()
            self.model.train(was_training)
        layout = self._layout(act)
        act = _to_nchw(act.detach(), layout, self.grid)
        grad = _to_nchw(grad, layout, self.grid)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = F.relu((weights * act).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
        return cam / peak


def overlay(image: np.ndarray, cam: np.ndarray | torch.Tensor, alpha: float = 0.45) -> np.ndarray:
    """Blend a map ``(h, w)`` in [0, 1] (resized to the image) as a jet heat map over RGB uint8 ``(H, W, 3)``."""
    import cv2

    cam = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    cam = cv2.resize(cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    return np.uint8(np.clip((1 - alpha) * image + alpha * heat, 0, 255))
