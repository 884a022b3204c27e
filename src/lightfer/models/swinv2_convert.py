"""Weights of ``transformers.Swinv2Model`` into :class:`lightfer.models.swinv2.SwinTransformerV2`.

Used by the parity test that proves our SwinV2 (Liu et al., CVPR 2022) equals the reference, and to
start from Hugging Face SwinV2 checkpoints (loaded by the caller; nothing is downloaded here).
"""
from __future__ import annotations

import torch

from lightfer.models.swinv2 import SwinTransformerV2


def load_hf_swinv2_state_dict(model: SwinTransformerV2, hf_state: dict[str, torch.Tensor]) -> None:
    """Copy a ``transformers.Swinv2Model`` state dict (keys without the ``swinv2.`` prefix) into ``model``.

    Raises ``KeyError`` naming any of our parameters the reference does not provide.
    """
    g = {k.removeprefix("swinv2."): v for k, v in hf_state.items()}
    out: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": g["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": g["embeddings.patch_embeddings.projection.bias"],
        "patch_embed.norm.weight": g["embeddings.norm.weight"],
        "patch_embed.norm.bias": g["embeddings.norm.bias"],
        "norm.weight": g["layernorm.weight"],
        "norm.bias": g["layernorm.bias"],
    }
    for i, stage in enumerate(model.stages):
        if i > 0:  # the reference merges at the end of stage i-1, we at the start of stage i
            for k in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"stages.{i}.downsample.{k}"] = g[f"encoder.layers.{i - 1}.downsample.{k}"]
        for j in range(len(stage.blocks)):
            src, dst = f"encoder.layers.{i}.blocks.{j}.", f"stages.{i}.blocks.{j}."
            a = src + "attention.self."
            out[dst + "attn.qkv.weight"] = torch.cat([g[a + "query.weight"], g[a + "key.weight"], g[a + "value.weight"]])
            if a + "query.bias" in g:
                out[dst + "attn.q_bias"] = g[a + "query.bias"]
                out[dst + "attn.v_bias"] = g[a + "value.bias"]
            out[dst + "attn.logit_scale"] = g[a + "logit_scale"]
            for k in ("0.weight", "0.bias", "2.weight"):
                out[dst + f"attn.cpb_mlp.{k}"] = g[a + f"continuous_position_bias_mlp.{k}"]
            pairs = {
                "attn.proj": "attention.output.dense", "norm1": "layernorm_before", "mlp.0": "intermediate.dense",
                "mlp.3": "output.dense", "norm2": "layernorm_after",
            }
            for ours, theirs in pairs.items():
                for k in ("weight", "bias"):
                    out[dst + f"{ours}.{k}"] = g[src + f"{theirs}.{k}"]
    own = {k for k in model.state_dict() if not k.startswith("head.")}
    missing = own - set(out)
    if missing:
        raise KeyError(f"reference state dict lacks {sorted(missing)[:5]}")
    model.load_state_dict(out, strict=False)
