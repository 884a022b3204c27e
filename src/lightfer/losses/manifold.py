"""Fine-grained manifold distillation (Hao et al., "Learning Efficient Vision Transformers via
Fine-Grained Manifold Distillation", NeurIPS 2022), as used by seed 000.

For a paired layer with student tokens ``F_s (B, N, D_s)`` and teacher tokens ``F_t (B, N, D_t)``,
ψ L2-normalises each token and M(F) = ψ(F)ψ(F)ᵀ is the relation map:

- intra-image: ``1/(B·N²) Σ_b ‖M(F_s[b]) − M(F_t[b])‖²_F``      (N×N per image)
- inter-image: ``1/(N·B²) Σ_n ‖M(F_s[:, n]) − M(F_t[:, n])‖²_F``  (B×B per patch position)
- random-sampled: ``1/K² ‖M(F_s^K) − M(F_t^K)‖²_F`` over the same K of the B·N tokens.

The maps are dimension-free (D_s ≠ D_t is fine). Memory stays bounded: :func:`relation_distance`
computes the squared Frobenius norm of the map difference ``chunk`` rows at a time, and its
gradient ``4·(M_s − M_t)·ψ(F_s)`` in the same pass, so no N×N map is ever held whole (nor kept
for backward). A 56×56-token stage (N = 3136) at batch 64 with 256-row chunks needs ~0.2 GB per
map chunk.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["relation_distance", "ManifoldDistillation", "to_tokens", "pool_tokens"]


class _RelationDistance(torch.autograd.Function):
    """Σ_g ‖A_g A_gᵀ − B_g B_gᵀ‖²_F over ``(G, N, D)`` inputs, in row chunks, with its gradient."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:  # type: ignore[override]
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = a.new_zeros(())
        ga = torch.zeros_like(a) if need_a else None
        gb = torch.zeros_like(b) if need_b else None
        n = a.shape[1]
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            d = torch.bmm(a[:, i:j], a.transpose(1, 2)) - torch.bmm(b[:, i:j], b.transpose(1, 2))  # (G, c, N)
            total = total + d.square().sum()
            # the difference map is symmetric, so rows i:j of D·A are D[i:j]·A
            if ga is not None:
                ga[:, i:j] = 4.0 * torch.bmm(d, a)
            if gb is not None:
                gb[:, i:j] = -4.0 * torch.bmm(d, b)
        ctx.save_for_backward(*(g for g in (ga, gb) if g is not None))
        ctx.has = (need_a, need_b)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        ga = saved.pop(0) * grad_out if ctx.has[0] else None
        gb = saved.pop(0) * grad_out if ctx.has[1] else None
        return ga, gb, None


def relation_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 256, normalize: bool = True) -> torch.Tensor:
    """Summed squared Frobenius distance between relation maps, computed in row chunks.

    Args:
        a: ``(G, N, D_a)`` — G independent sets of N vectors (student).
        b: ``(G, N, D_b)`` — the same sets from the teacher (any width).
        chunk: rows of the N×N maps computed at once (memory ∝ G·chunk·N).
        normalize: L2-normalise each vector first (ψ).

    Returns:
        Scalar ``Σ_g ‖ψ(a_g)ψ(a_g)ᵀ − ψ(b_g)ψ(b_g)ᵀ‖²_F`` in float32 (float64 inputs stay float64).
    """
    if a.ndim != 3 or b.ndim != 3 or a.shape[:2] != b.shape[:2]:
        raise ValueError(f"need (G, N, D) inputs with equal G, N; got {tuple(a.shape)} and {tuple(b.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    with torch.autocast(a.device.type, enabled=False):  # under bf16/fp16 autocast the maps' products stay fp32
        return _RelationDistance.apply(a.contiguous(), b.contiguous(), int(chunk))


def to_tokens(x: torch.Tensor, layout: str = "auto") -> torch.Tensor:
    """Feature map → ``(B, N, D)`` tokens. ``layout``: ``nlc`` (B, N, D), ``nchw``, ``nhwc``,
    or ``auto`` (3-D = nlc, 4-D = nchw)."""
    if layout == "auto":
        layout = "nlc" if x.ndim == 3 else "nchw"
    if layout == "nlc" and x.ndim == 3:
        return x
    if layout == "nchw" and x.ndim == 4:
        return x.flatten(2).transpose(1, 2)
    if layout == "nhwc" and x.ndim == 4:
        return x.flatten(1, 2)
    raise ValueError(f"feature of shape {tuple(x.shape)} does not match layout {layout!r}")


def pool_tokens(x: torch.Tensor, out: int) -> torch.Tensor:
    """Tokens of a square grid ``(B, h·h, D)`` → ``(B, out·out, D)`` by adaptive average pooling (``out <= h``)."""
    n = x.shape[1]
    h = math.isqrt(n)
    if h * h != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    if not 1 <= out <= h:
        raise ValueError(f"cannot pool a {h}x{h} token grid to {out}x{out} (need 1 <= grid <= {h})")
    if out == h:
        return x
    g = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, h)
    return F.adaptive_avg_pool2d(g, out).flatten(2).transpose(1, 2)


def _match_tokens(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the finer of two square token grids to the coarser one (adaptive average)."""
    ns, nt = s.shape[1], t.shape[1]
    if ns == nt:
        return s, t
    hs, ht = math.isqrt(ns), math.isqrt(nt)
    if hs * hs != ns or ht * ht != nt:
        raise ValueError(f"student has {ns} tokens and teacher {nt}: pair layers of equal spatial size")
    if ns > nt:
        return pool_tokens(s, ht), t
    return s, pool_tokens(t, hs)


class ManifoldDistillation(nn.Module):
    """λ_intra·L_intra + λ_inter·L_inter + λ_rand·L_rand, summed over paired layers.

    Args:
        lambda_intra / lambda_inter / lambda_rand: weights of the three relation losses.
        num_samples: K, tokens drawn from the B·N pool for the random-sampled loss.
        chunk: rows per chunk of each relation map (bounds memory; the value does not change the result).
        layout: how the student's 4-D features are laid out (see :func:`to_tokens`).
        teacher_layout: the teacher's, when it differs (e.g. ``nchw`` maps of a CNN teacher for a Swin
            student's ``nhwc`` stages); ``None``: the same as ``layout``.
    """

    def __init__(
        self,
        lambda_intra: float = 1.0,
        lambda_inter: float = 1.0,
        lambda_rand: float = 1.0,
        num_samples: int = 192,
        chunk: int = 256,
        layout: str = "auto",
        teacher_layout: str | None = None,
        grids: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if min(lambda_intra, lambda_inter, lambda_rand) < 0:
            raise ValueError("manifold-distillation weights must be >= 0")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.lambda_intra, self.lambda_inter, self.lambda_rand = float(lambda_intra), float(lambda_inter), float(lambda_rand)
        self.num_samples, self.chunk, self.layout = int(num_samples), int(chunk), layout
        self.teacher_layout = layout if teacher_layout is None else teacher_layout
        self.grids = [int(g) for g in grids] if grids else []
        if any(g < 1 for g in self.grids):
            raise ValueError(f"grids must be >= 1, got {self.grids}")

    def layer_losses(
        self, fs: torch.Tensor, ft: torch.Tensor, generator: torch.Generator | None = None, grid: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Unweighted ``intra``, ``inter``, ``rand`` losses of one layer pair ``(B, N, D_s)``/``(B, N, D_t)``
        (or 4-D maps in the layouts); ``grid``: pool both to ``grid x grid`` tokens first."""
        fs, ft = to_tokens(fs, self.layout), to_tokens(ft.detach(), self.teacher_layout)
        if fs.shape[0] != ft.shape[0]:
            raise ValueError(f"student batch {fs.shape[0]} != teacher batch {ft.shape[0]}")
        if grid is not None:
            fs, ft = pool_tokens(fs, grid), pool_tokens(ft, grid)
        fs, ft = _match_tokens(fs, ft)
        b, n = fs.shape[:2]
        out: dict[str, torch.Tensor] = {}
        if self.lambda_intra > 0:
            out["intra"] = relation_distance(fs, ft, self.chunk) / (b * n * n)
        if self.lambda_inter > 0:
            out["inter"] = relation_distance(fs.transpose(0, 1), ft.transpose(0, 1), self.chunk) / (n * b * b)
        if self.lambda_rand > 0:
            k = min(self.num_samples, b * n)
            idx = torch.randperm(b * n, generator=generator, device="cpu")[:k].to(fs.device)
            rs = fs.reshape(b * n, -1)[idx].unsqueeze(0)
            rt = ft.reshape(b * n, -1)[idx].unsqueeze(0)
            out["rand"] = relation_distance(rs, rt, self.chunk) / (k * k)
        return out

    def forward(
        self,
        student_feats: Sequence[torch.Tensor],
        teacher_feats: Sequence[torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Weighted MD loss summed over the layer pairs (lists of equal length) → scalar."""
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ValueError(
                f"need equally many student and teacher features (got {len(student_feats)} and {len(teacher_feats)})"
            )
        if self.grids and len(self.grids) != len(student_feats):
            raise ValueError(f"{len(self.grids)} grids for {len(student_feats)} layer pairs")
        weights = {"intra": self.lambda_intra, "inter": self.lambda_inter, "rand": self.lambda_rand}
        total = student_feats[0].new_zeros((), dtype=torch.float32)
        grids = self.grids or [None] * len(student_feats)
        for fs, ft, grid in zip(student_feats, teacher_feats, grids):
            for key, val in self.layer_losses(fs, ft, generator, grid).items():
                total = total + weights[key] * val
        return total
