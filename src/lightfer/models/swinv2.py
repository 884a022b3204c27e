"""Swin Transformer V2 for face crops, written in plain torch.

Implements Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution" (CVPR 2022) as
used by seed 000 (SwinV2 students distilled from a larger SwinV2 teacher) and seed 003 (Swin + SE
head): patch embedding, windowed *scaled cosine* attention with a *log-spaced continuous relative
position bias* (CPB MLP), shifted windows with attention masks, res-post-norm blocks and patch
merging. Numerically identical to ``transformers.Swinv2Model`` (proved by
``tests/models/test_swinv2_parity.py``; weights map with
:func:`lightfer.models.swinv2_convert.load_hf_swinv2_state_dict`).

Sizes are free: a feature map whose side is not a multiple of the window is zero-padded on the
bottom/right (as in the reference), odd maps are padded before patch merging, and a window larger
than the map shrinks to the map (and then is not shifted). Window and shift are fixed at
construction from ``img_size`` (stage ``i`` side = ``ceil(img_size / patch / 2**i)``); other input
sizes still run, padded.

Tokens for manifold distillation: ``forward_stages(x)`` returns every stage output as ``(B, N_i, C_i)``
patch tokens in row-major order (``N_i = H_i * W_i``, before the next stage's patch merging), and
``forward_features(x, return_stages=True)`` returns ``(final_tokens, stages)``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightfer.models.heads import ClassifierHead
from lightfer.models.registry import PretrainedCfg, register_model


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` with H, W multiples of ``ws`` -> ``(B * nW, ws * ws, C)`` windows."""
    _, h, w, c = x.shape
    x = x.reshape(-1, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``(B * nW, ws * ws, C)`` windows -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> same shape, whole samples zeroed with probability ``p`` during training."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class WindowAttention(nn.Module):
    """Scaled cosine self-attention inside a window, with the log-spaced continuous position bias."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, *, pretrained_window_size: int = 0,
        qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, cpb_hidden: int = 512,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False))
        table, index = _relative_tables(window_size, pretrained_window_size)
        self.register_buffer("relative_coords_table", table, persistent=False)  # (2w-1, 2w-1, 2)
        self.register_buffer("relative_position_index", index, persistent=False)  # (w*w, w*w)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache: tuple[tuple[tuple[int, int], ...], torch.Tensor] | None = None

    def position_bias(self) -> torch.Tensor:
        """``(heads, N, N)`` bias, ``16 * sigmoid(CPB-MLP(log-spaced relative coords))``, N = w*w.

        Without autograd (inference) the bias is cached until a CPB weight changes (in-place updates
        bump the tensor version, loading or moving changes the storage), saving ~7% of a student's time.
        """
        if self.training or torch.is_grad_enabled():
            return self._position_bias()
        key = tuple((p.data_ptr(), p._version) for p in self.cpb_mlp.parameters())
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self._position_bias())
        return self._bias_cache[1]

    def _position_bias(self) -> torch.Tensor:
        n = self.window_size * self.window_size
        table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.num_heads)
        bias = table[self.relative_position_index.reshape(-1)].reshape(n, n, self.num_heads)
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Windows ``(B * nW, N, C)`` (mask ``(nW, N, N)`` of 0 / -100) -> ``(B * nW, N, C)``."""
        bw, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, heads, N, hd)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        attn = attn + self.position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


def _relative_tables(ws: int, pretrained_ws: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-spaced relative coordinates ``(2w-1, 2w-1, 2)`` and the index ``(w*w, w*w)`` into them."""
    rel = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1)  # (2w-1, 2w-1, 2)
    if pretrained_ws > 0:
        table = table / (pretrained_ws - 1)
    elif ws > 1:
        table = table / (ws - 1)
    table = table * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    relc = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (N, N, 2)
    index = relc[..., 0] * (2 * ws - 1) + relc[..., 1]
    return table, index


class SwinV2Block(nn.Module):
    """(Shifted-)window attention + MLP, each with res-post-norm: ``x + norm(f(x))``."""

    def __init__(
        self, dim: int, num_heads: int, feat_size: int, *, window_size: int = 7, shift: bool = False,
        mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
        drop_path: float = 0.0, pretrained_window_size: int = 0,
    ) -> None:
        super().__init__()
        self.window_size = min(window_size, feat_size)
        self.shift_size = window_size // 2 if (shift and feat_size > window_size) else 0
        self.attn = WindowAttention(
            dim, num_heads, self.window_size, pretrained_window_size=pretrained_window_size,
            qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop))
        self.norm2 = nn.LayerNorm(dim)
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}

    def attn_mask(self, hp: int, wp: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """``(nW, N, N)`` mask (0 inside a region, -100 across) for the padded ``hp x wp`` map, or None."""
        if self.shift_size == 0:
            return None
        key = (hp, wp, device, dtype)
        if key not in self._masks:
            ws, s = self.window_size, self.shift_size
            h_reg = (torch.arange(hp) >= hp - ws).long() + (torch.arange(hp) >= hp - s).long()
            w_reg = (torch.arange(wp) >= wp - ws).long() + (torch.arange(wp) >= wp - s).long()
            img = (h_reg[None, :, None, None] * 3 + w_reg[None, None, :, None]).float()
            win = window_partition(img, ws).squeeze(-1)  # (nW, N)
            diff = win.unsqueeze(1) - win.unsqueeze(2)
            self._masks[key] = torch.where(diff != 0, -100.0, 0.0).to(device=device, dtype=dtype)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        _, h, w, c = x.shape
        ws, s = self.window_size, self.shift_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if (pad_b or pad_r) else x
        hp, wp = h + pad_b, w + pad_r
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, ws), self.attn_mask(hp, wp, x.device, x.dtype))
        y = window_reverse(y, ws, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        if pad_b or pad_r:
            y = y[:, :h, :w, :]
        x = x + self.drop_path(self.norm1(y))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> Linear(4C, 2C) -> LayerNorm (odd sides are zero-padded first)."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), out_dim)``."""
        _, h, w, _ = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` conv (input zero-padded to a multiple) -> LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, ceil(H/p), ceil(W/p), D)``."""
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinV2Stage(nn.Module):
    """Optional patch merging, then ``depth`` blocks alternating plain and shifted windows."""

    def __init__(
        self, dim: int, out_dim: int, depth: int, num_heads: int, feat_size: int, *, downsample: bool,
        window_size: int, drop_path: Sequence[float], pretrained_window_size: int = 0, **block_kw: Any,
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinV2Block(
                out_dim, num_heads, feat_size, window_size=window_size, shift=bool(i % 2),
                drop_path=drop_path[i], pretrained_window_size=pretrained_window_size, **block_kw,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C_in)`` -> ``(B, H', W', C_out)`` (H' = ceil(H/2) when downsampling)."""
        x = self.downsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


def _per_stage(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    out = (int(v),) * n if isinstance(v, int) else tuple(int(a) for a in v)
    if len(out) != n:
        raise ValueError(f"{what} needs one value per stage ({n}), got {v!r}")
    return out


class SwinTransformerV2(nn.Module):
    """SwinV2 classifier: ``(B, in_chans, S, S)`` -> ``(B, num_classes)``.

    Args:
        img_size: side the windows/shifts are planned for (other sizes run, padded).
        patch_size: side of the patch-embedding conv.
        embed_dim: channels of stage 1 (doubled at every later stage).
        depths / num_heads: blocks and attention heads per stage.
        window_size: attention window (one int or one per stage).
        pretrained_window_sizes: window the CPB coordinates were normalised to in pre-training (0 = own).
        head: ``"linear"`` or ``"se"`` (seed 003 squeeze-excitation head), see :mod:`lightfer.models.heads`.
    """

    def __init__(
        self, img_size: int = 112, patch_size: int = 4, in_chans: int = 1, num_classes: int = 7,
        embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
        pretrained_window_sizes: int | Sequence[int] = 0, head: str = "linear", se_reduction: int = 4,
    ) -> None:
        super().__init__()
        n = len(depths)
        heads = _per_stage(num_heads, n, "num_heads")
        windows = _per_stage(window_size, n, "window_size")
        pws = _per_stage(pretrained_window_sizes, n, "pretrained_window_sizes")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        feat = math.ceil(img_size / patch_size)
        dims = [embed_dim * 2**i for i in range(n)]
        self.feat_sizes: list[int] = []
        stages = []
        for i in range(n):
            if i > 0:
                feat = math.ceil(feat / 2)
            self.feat_sizes.append(feat)
            stages.append(SwinV2Stage(
                dims[max(i - 1, 0)], dims[i], depths[i], heads[i], feat, downsample=i > 0, window_size=windows[i],
                drop_path=dpr[sum(depths[:i]): sum(depths[: i + 1])], pretrained_window_size=pws[i],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
            ))
        self.stages = nn.ModuleList(stages)
        self.stage_dims = dims
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, kind=head, drop_rate=drop_rate, se_reduction=se_reduction)
        self.apply(_init_weights)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> every stage output as tokens ``[(B, N_i, C_i)]`` (no final norm)."""
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x.flatten(1, 2))
        return outs

    def forward_features(
        self, x: torch.Tensor, return_stages: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images ``(B, C, H, W)`` -> normalised last-stage tokens ``(B, N, C)`` (and the stage list)."""
        stages = self.forward_stages(x)
        feats = self.norm(stages[-1])
        return (feats, stages) if return_stages else feats

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, N, C)`` -> logits ``(B, K)`` (pooled ``(B, C)`` with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _cfg(size: int, description: str) -> PretrainedCfg:
    return PretrainedCfg(input_size=size, in_chans=1, mean=(0.5,), std=(0.5,), crop_margin=0.0, description=description)


def _swin(num_classes: int, in_chans: int, defaults: dict[str, Any], kwargs: dict[str, Any]) -> SwinTransformerV2:
    return SwinTransformerV2(num_classes=num_classes, in_chans=in_chans, **{**defaults, **kwargs})


@register_model(_cfg(112, "SwinV2-B-width teacher (embed 128, depths 2-2-18-2), window 7"))
def swinv2_base(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> SwinTransformerV2:
    """Teacher of Swin-B width for manifold distillation (seed 000)."""
    d = dict(img_size=112, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.3)
    return _swin(num_classes, in_chans, d, kwargs)


@register_model(_cfg(112, "SwinV2-Small (embed 96, depths 2-2-18-2), window 7"))
def swinv2_small(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> SwinTransformerV2:
    """SwinV2-S."""
    d = dict(img_size=112, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3)
    return _swin(num_classes, in_chans, d, kwargs)


@register_model(_cfg(112, "SwinV2-Tiny (embed 96, depths 2-2-6-2), window 7"))
def swinv2_tiny(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> SwinTransformerV2:
    """SwinV2-T."""
    d = dict(img_size=112, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2)
    return _swin(num_classes, in_chans, d, kwargs)


@register_model(_cfg(112, "CPU student: embed 48, depths 1-1-3-1, patch 8 (14x14 tokens), window 7"))
def swinv2_student_112(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> SwinTransformerV2:
    """Compact student at 112 px: patch 8 gives 14-7-4-2 token grids (the teacher's stages 2-4 sides)."""
    d = dict(img_size=112, patch_size=8, embed_dim=48, depths=(1, 1, 3, 1), num_heads=(2, 4, 8, 16), window_size=7, drop_path_rate=0.05)
    return _swin(num_classes, in_chans, d, kwargs)


@register_model(_cfg(64, "CPU student: embed 48, depths 2-2-2-2, patch 4 (16x16 tokens), window 8"))
def swinv2_student_64(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> SwinTransformerV2:
    """Compact student at 64 px: 16-8-4-2 token grids."""
    d = dict(img_size=64, patch_size=4, embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=8, drop_path_rate=0.05)
    return _swin(num_classes, in_chans, d, kwargs)
