"""Our SwinV2 equals ``transformers.Swinv2Model`` (independent implementation) with copied weights."""
from __future__ import annotations

import pytest
import torch

from lightfer.models.swinv2 import SwinTransformerV2
from lightfer.models.swinv2_convert import load_hf_swinv2_state_dict

transformers = pytest.importorskip("transformers")

# (planned image side, runtime side, patch, embed, depths, heads, window, channels)
CASES = [
    pytest.param(32, 32, 4, 16, (2, 2), (2, 4), 4, 3, id="shifted-8x8-window4"),
    # 22 -> 11 -> 6 tokens: no side is a multiple of the window, odd map merged, shifted stage 3
    pytest.param(88, 88, 4, 16, (2, 2, 2), (2, 2, 4), 4, 1, id="non-multiple-odd-merge"),
    # run at another size than planned: 90 px -> 23x23 tokens (patch padding + window padding)
    pytest.param(88, 90, 4, 16, (2, 2, 2), (2, 2, 4), 4, 1, id="runtime-90px"),
    pytest.param(56, 56, 4, 24, (2, 1), (3, 6), 7, 3, id="window7-shrinks-to-map"),
    # CPB coordinates normalised to a pre-training window (8) other than the window used (4)
    pytest.param(32, 32, 4, 16, (2, 2), (2, 4), 4, 3, (8, 8), id="pretrained-window-8"),
]


def _pair(img: int, patch: int, embed: int, depths: tuple, heads: tuple, ws: int, chans: int, pws: tuple = (0, 0)):
    pws = tuple(pws) + (0,) * (len(depths) - len(pws))
    cfg = transformers.Swinv2Config(
        pretrained_window_sizes=list(pws),
        image_size=img, patch_size=patch, num_channels=chans, embed_dim=embed, depths=list(depths),
        num_heads=list(heads), window_size=ws, drop_path_rate=0.0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    ref = transformers.Swinv2Model(cfg).eval()
    with torch.no_grad():  # move every weight away from its init so that no term is trivially 0 or 1
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = SwinTransformerV2(
        img_size=img, patch_size=patch, in_chans=chans, num_classes=0, embed_dim=embed, depths=depths,
        num_heads=heads, window_size=ws, drop_path_rate=0.0, pretrained_window_sizes=pws,
    ).eval()
    load_hf_swinv2_state_dict(ours, ref.state_dict())
    return ref, ours


def _run(ref, ours, x: torch.Tensor):
    stages: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: stages.append(o[1])) for layer in ref.encoder.layers]
    with torch.no_grad():
        out = ref(x)
        feats, our_stages = ours.forward_features(x, return_stages=True)
        pooled = ours.forward_head(feats)
    for h in hooks:
        h.remove()
    return out, stages, feats, our_stages, pooled


@pytest.mark.parametrize("img,run,patch,embed,depths,heads,ws,chans,pws", [
    pytest.param(*c.values, *(() if len(c.values) == 9 else ((0, 0),)), id=c.id) for c in CASES
])
def test_matches_transformers(img, run, patch, embed, depths, heads, ws, chans, pws) -> None:
    ref, ours = _pair(img, patch, embed, depths, heads, ws, chans, pws)
    assert any(b.shift_size > 0 for s in ours.stages for b in s.blocks), "case must exercise shifted windows"
    x = torch.randn(2, chans, run, run)
    out, ref_stages, feats, our_stages, pooled = _run(ref, ours, x)
    assert feats.shape == out.last_hidden_state.shape
    torch.testing.assert_close(feats, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
    assert len(our_stages) == len(ref_stages) == len(depths)
    for a, b in zip(our_stages, ref_stages):  # stage tokens (B, N, C), before the next merge
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_parity_is_sensitive_to_each_part() -> None:
    """The comparison above must fail when any one component of ours is changed."""
    ref, ours = _pair(32, 4, 16, (2, 2), (2, 4), 4, 3)
    x = torch.randn(2, 3, 32, 32)
    base = _run(ref, ours, x)[0].last_hidden_state
    blk = ours.stages[0].blocks[1]
    for tweak in ("cpb", "logit_scale", "mask", "v_bias"):
        saved = {k: v.clone() for k, v in ours.state_dict().items()}
        with torch.no_grad():
            if tweak == "cpb":
                blk.attn.cpb_mlp[2].weight.mul_(1.5)
            elif tweak == "logit_scale":
                blk.attn.logit_scale.add_(0.3)
            elif tweak == "v_bias":
                ours.stages[1].blocks[0].attn.v_bias.add_(0.1)
        if tweak == "mask":
            blk.shift_size, old = 0, blk.shift_size
        feats = _run(ref, ours, x)[2]
        assert (feats - base).abs().max() > 1e-3, f"changing {tweak} went unnoticed"
        if tweak == "mask":
            blk.shift_size = old
        ours.load_state_dict(saved, strict=False)
    torch.testing.assert_close(_run(ref, ours, x)[2], base, atol=1e-5, rtol=0)


def test_mapping_rejects_incomplete_reference() -> None:
    ref, ours = _pair(32, 4, 16, (2, 2), (2, 4), 4, 3)
    state = ref.state_dict()
    state.pop("encoder.layers.1.blocks.0.attention.self.logit_scale")
    with pytest.raises(KeyError):
        load_hf_swinv2_state_dict(ours, state)
