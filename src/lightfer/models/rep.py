"""Training-time over-parameterisation that folds away for inference (MobileOne / RepVGG style).

Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone" (CVPR 2023) and Ding et al., "RepVGG"
(CVPR 2021): during training a ``Conv2d → BatchNorm2d`` pair is replaced by the sum of several linear branches,
each ending in its own BatchNorm —

- ``branches`` parallel k×k convolutions (the MobileOne over-parameterisation factor),
- a 1×1 "scale" convolution when k > 1 (padded to k×k when folded),
- a BatchNorm-only identity branch when the input and output shapes agree (stride 1, same channels).

Every branch is linear in eval mode, so their sum is one k×k convolution plus a bias. :func:`reparameterize`
folds each :class:`RepConvBN` into the *plain* layout it stands for — a bias-free ``Conv2d`` followed by a
``BatchNorm2d`` (mean 0, variance 1 − eps, weight 1, bias = the folded bias) — so a reparameterised network has
exactly the state-dict keys, the ONNX graph and the latency of the network trained without it. The folded network
agrees with the branched one in eval mode to float rounding (tested). Only the training graph is larger (more
BatchNorms and 1×1 convolutions per step).
"""
from __future__ import annotations

import torch
from torch import nn

from lightfer.models.fold import bn_affine

__all__ = ["RepConvBN", "conv_bn", "reparameterize", "has_branches", "load_plain_state"]


class RepConvBN(nn.Module):
    """Branched stand-in for ``Conv2d(cin, cout, k, stride, k // 2, groups, bias=False) → BatchNorm2d(cout)``.

    ``(B, Cin, H, W) -> (B, Cout, H / stride, W / stride)``: the sum of the branches listed in the module docstring.
    ``branches`` ≥ 1 is the number of parallel k×k convolutions."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 branches: int = 1) -> None:
        super().__init__()
        if branches < 1:
            raise ValueError(f"RepConvBN needs at least one k x k branch, got branches={branches}")
        if kernel_size % 2 != 1:
            raise ValueError(f"RepConvBN folds odd kernels only, got kernel_size={kernel_size}")
        self.cin, self.cout, self.k, self.stride, self.groups = cin, cout, kernel_size, stride, groups
        pad = kernel_size // 2
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, pad, groups=groups, bias=False),
                          nn.BatchNorm2d(cout))
            for _ in range(branches))
        self.scale = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False), nn.BatchNorm2d(cout))
                      if kernel_size > 1 else None)
        self.identity = nn.BatchNorm2d(cout) if stride == 1 and cin == cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, Cout, H', W')``, the sum of the branches."""
        out = self.convs[0](x)
        for branch in self.convs[1:]:
            out = out + branch(x)
        if self.scale is not None:
            out = out + self.scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return out

    @torch.no_grad()
    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one convolution the branches add up to in eval mode -> weight ``(Cout, Cin / groups, k, k)``, bias
        ``(Cout,)``."""
        k, pad = self.k, self.k // 2
        first = self.convs[0][0].weight
        weight = torch.zeros_like(first)
        bias = torch.zeros(self.cout, dtype=first.dtype, device=first.device)
        parts: list[tuple[torch.Tensor, nn.BatchNorm2d]] = [(b[0].weight, b[1]) for b in self.convs]
        if self.scale is not None:
            parts.append((nn.functional.pad(self.scale[0].weight, (pad, pad, pad, pad)), self.scale[1]))
        if self.identity is not None:
            eye = torch.zeros_like(first)
            per_group = self.cin // self.groups
            idx = torch.arange(self.cout, device=first.device)
            eye[idx, idx % per_group, pad, pad] = 1.0
            parts.append((eye, self.identity))
        for w, bn in parts:
            a, b = bn_affine(bn)
            weight += w * a.reshape(-1, 1, 1, 1)
            bias += b
        assert weight.shape[-1] == k
        return weight, bias

    @torch.no_grad()
    def fused(self) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        """The plain ``(Conv2d without bias, BatchNorm2d)`` pair equal to this module in eval mode."""
        weight, bias = self.folded_kernel()
        conv = nn.Conv2d(self.cin, self.cout, self.k, self.stride, self.k // 2, groups=self.groups, bias=False)
        bn = nn.BatchNorm2d(self.cout)
        conv.to(weight.device, weight.dtype).weight.copy_(weight)
        bn.to(weight.device, weight.dtype)
        bn.weight.fill_(1.0)
        bn.bias.copy_(bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # rsqrt(var + eps) == 1: the BN adds the folded bias and nothing else
        return conv, bn.eval()


def conv_bn(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1, rep: int = 0) -> list[nn.Module]:
    """The two ``nn.Sequential`` slots of a ``Conv2d → BatchNorm2d`` pair: the plain pair when ``rep`` is 0, else
    ``[RepConvBN(..., branches=rep), nn.Identity()]`` — the second slot keeps the BatchNorm's index so that
    :func:`reparameterize` restores the plain state-dict keys."""
    if rep <= 0:
        return [nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout)]
    return [RepConvBN(cin, cout, kernel_size, stride, groups, branches=rep), nn.Identity()]


@torch.no_grad()
def reparameterize(model: nn.Module) -> int:
    """Fold every :class:`RepConvBN` of ``model`` (in eval mode) into its plain ``Conv2d → BatchNorm2d`` pair, in
    place -> the number folded (0 for a network without them, which is left untouched).

    A ``RepConvBN`` must sit in an ``nn.Sequential`` followed by the ``nn.Identity`` that :func:`conv_bn` puts
    there; the pair takes both slots."""
    if model.training:
        raise ValueError("reparameterize needs a model in eval mode (the BatchNorms' running statistics are folded)")
    n = 0
    for mod in list(model.modules()):
        if not isinstance(mod, nn.Sequential):
            continue
        for i in range(len(mod)):
            if isinstance(mod[i], RepConvBN):
                if i + 1 >= len(mod) or not isinstance(mod[i + 1], nn.Identity):
                    raise ValueError("a RepConvBN must be followed by the nn.Identity slot conv_bn() gives it")
                grad = mod[i].convs[0][0].weight.requires_grad
                conv, bn = mod[i].fused()
                mod[i], mod[i + 1] = conv.requires_grad_(grad), bn.requires_grad_(grad)
                n += 1
    return n


def has_branches(model: nn.Module) -> bool:
    """Whether ``model`` holds any unfolded :class:`RepConvBN`."""
    return any(isinstance(m, RepConvBN) for m in model.modules())


@torch.no_grad()
def load_plain_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Start a branched ``model`` from the weights of its plain layout (``state``: e.g. a shipped model's), in place.

    Each :class:`RepConvBN` takes the plain convolution and BatchNorm into its first k×k branch; every other branch
    (further k×k, scale, identity) keeps its fresh convolution but gets BatchNorm weight and bias 0, so it adds nothing
    until training moves it: in eval mode the branched model answers exactly as the plain one. Raises ``ValueError``
    naming the first key that is missing or left over."""
    reps = {name: m for name, m in model.named_modules() if isinstance(m, RepConvBN)}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        if src not in state:
            raise ValueError(f"plain weights lack {src!r} (for {dst})")
        out[dst] = state[src]
        used.add(src)

    for name, rep in reps.items():
        parent, _, idx = name.rpartition(".")
        bn = f"{parent}.{int(idx) + 1}" if parent else str(int(idx) + 1)
        take(f"{name}.weight", f"{name}.convs.0.0.weight")
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            take(f"{bn}.{suffix}", f"{name}.convs.0.1.{suffix}")
        silent = [f"{name}.convs.{j}.1" for j in range(1, len(rep.convs))]
        silent += [f"{name}.scale.1"] * (rep.scale is not None) + [f"{name}.identity"] * (rep.identity is not None)
        for prefix in silent:
            for suffix in ("weight", "bias"):
                out[f"{prefix}.{suffix}"] = torch.zeros(rep.cout)
    own = model.state_dict()
    for key in own:
        if key not in out and not any(key.startswith(f"{name}.") for name in reps):
            take(key, key)
    if extra := sorted(set(state) - used):
        raise ValueError(f"plain weights hold {extra[0]!r}, which the branched model has no place for")
    merged = {k: out.get(k, v) for k, v in own.items()}
    model.load_state_dict(merged)
