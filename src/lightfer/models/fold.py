"""Fold eval-mode BatchNorm into the convolution before it, for frozen networks (a distillation teacher).

Only the pattern ``nn.Sequential(..., Conv2d, BatchNorm2d, ...)`` is folded — the layout of the ShuffleNetV2,
mini-Xception and stem blocks here; BN layers held as attributes (ResNet's ``bn1``) are left alone. Each folded
BN becomes ``nn.Identity`` so module names, and the hooks registered on them, stay valid. The folded network
agrees with the original to float rounding (~1e-6 on logits) and runs ~17% faster on CPU (ShuffleNetV2 x1.0,
batch 128, 64 px, 1 thread: 500 → 417 ms, one measurement)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm", "bn_affine"]


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * a + b`` -> ``(a, b)``, each ``(C,)``."""
    assert bn.running_var is not None and bn.running_mean is not None
    a = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    b = -bn.running_mean * a
    if bn.bias is not None:
        b = b + bn.bias
    return a, b


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One ``Conv2d`` with bias computing ``bn(conv(x))`` in eval mode."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    scale, shift = bn_affine(bn)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        out.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
    return out


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d → BatchNorm2d`` pair inside ``nn.Sequential`` containers of ``model`` in place.

    The model must be in eval mode (training-mode BN uses batch statistics, which cannot be folded).
    Returns the number of pairs folded."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    n = 0
    for mod in list(model.modules()):
        if not isinstance(mod, nn.Sequential):
            continue
        for i in range(len(mod) - 1):
            conv, bn = mod[i], mod[i + 1]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                mod[i] = _folded(conv, bn).requires_grad_(conv.weight.requires_grad)
                mod[i + 1] = nn.Identity()
                n += 1
    return n
