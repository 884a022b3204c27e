"""Every issue-3 architecture: counts, odd sizes, feature/head split, stage tokens, ONNX parity, one SGD step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightfer.export.onnx import check_onnx_parity, export_onnx
from lightfer.models import count_params, create_model, list_models
from lightfer.models.registry import _REGISTRY

ZOO_MODULES = {"lightfer.models.swinv2", "lightfer.models.resnet", "lightfer.models.shufflenet"}

# Small but same-class instances: (name, create_model kwargs). The big Swins get reduced depths here;
# their full size is constructed and counted in test_param_counts_match_references.
SMALL: dict[str, dict] = {
    "swinv2_base": dict(input_size=32, depths=(1, 1, 2, 1), window_size=4),
    "swinv2_small": dict(input_size=32, depths=(1, 1, 2, 1), window_size=4),
    "swinv2_tiny": dict(input_size=32, depths=(1, 1, 2, 1), window_size=4),
    "swinv2_student_112": dict(input_size=56),
    "swinv2_student_64": dict(input_size=32, window_size=4),
    "resnet18": dict(input_size=32),
    "eff_resnet18": dict(input_size=32),
    "shufflenet_v2_x0_5": dict(input_size=32),
    "shufflenet_v2_x0_75": dict(input_size=32),
    "shufflenet_v2_x1_0": dict(input_size=32),
    "shufflenet_v2_x1_5": dict(input_size=32),
    "shufflenet_v2_x2_0": dict(input_size=32),
}


def _zoo() -> list[str]:
    list_models()
    return sorted(n for n, e in _REGISTRY.items() if e.fn.__module__ in ZOO_MODULES)


def test_every_zoo_model_is_covered() -> None:
    assert set(_zoo()) == set(SMALL)
    for name in ("swinv2_base", "swinv2_small", "swinv2_tiny", "resnet18", "eff_resnet18", "shufflenet_v2_x1_0"):
        assert name in list_models()


def _small(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**SMALL[name], **kw})


# torchvision's published counts (ImageNet heads, 3 channels) -> ours with a 7-class head: exact.
TORCHVISION = {
    "resnet18": (11_689_512, 512),
    "shufflenet_v2_x0_5": (1_366_792, 1024),
    "shufflenet_v2_x1_0": (2_278_604, 1024),
    "shufflenet_v2_x1_5": (3_503_624, 1024),
    "shufflenet_v2_x2_0": (7_393_996, 2048),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_param_counts_match_references(name: str) -> None:
    total, feat = TORCHVISION[name]
    kw = dict(stem="imagenet") if name == "resnet18" else {}
    model = create_model(name, in_chans=3, num_classes=7, **kw)
    assert count_params(model) == total - 993 * (feat + 1)


def test_shufflenet_x1_is_seed_size_and_swin_widths() -> None:
    assert 1.25e6 < count_params(create_model("shufflenet_v2_x1_0")) < 1.27e6  # seed 001: ~1.26M
    assert count_params(create_model("shufflenet_v2_x0_75")) == 823_575  # lightfer's own width, between x0.5 and x1.0
    # SwinV2 T/S/B at ImageNet: 28.3M / 49.7M / 87.9M with 1000 classes (timm); 7 classes and gray here.
    for name, ref, dim in (("swinv2_tiny", 28.3e6, 768), ("swinv2_small", 49.7e6, 768), ("swinv2_base", 87.9e6, 1024)):
        n = count_params(create_model(name, in_chans=3))
        assert abs(n - (ref - 993 * (dim + 1))) < 0.002 * ref, (name, n)
    teacher = create_model("swinv2_base")
    assert [len(s.blocks) for s in teacher.stages] == [2, 2, 18, 2] and teacher.stage_dims[0] == 128


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size,chans,classes", [(37, 1, 7), (50, 3, 5)])
def test_odd_sizes_channels_classes(name: str, size: int, chans: int, classes: int) -> None:
    model = _small(name, in_chans=chans, num_classes=classes).eval()
    assert model.pretrained_cfg.in_chans == chans and model.pretrained_cfg.num_classes == classes
    with torch.no_grad():
        out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_features_then_head_is_forward(name: str) -> None:
    model = _small(name).eval()
    x = torch.randn(3, 1, 40, 40)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
        full = model(x)
    torch.testing.assert_close(logits, full)
    assert pre.shape == (3, model.num_features)
    torch.testing.assert_close(model.head.fc(pre), logits)
    # each sample's logits depend on that sample only (no batch mixing at eval)
    with torch.no_grad():
        torch.testing.assert_close(model(x[1:2]), full[1:2], atol=1e-5, rtol=1e-4)


def test_swin_stage_tokens() -> None:
    model = create_model("swinv2_student_64").eval()
    with torch.no_grad():
        feats, stages = model.forward_features(torch.randn(2, 1, 64, 64), return_stages=True)
        again = model.forward_stages(torch.randn(2, 1, 64, 64))
    assert [tuple(s.shape) for s in stages] == [(2, 256, 48), (2, 64, 96), (2, 16, 192), (2, 4, 384)]
    assert [s.shape for s in again] == [s.shape for s in stages]
    assert feats.shape == (2, 4, 384)
    torch.testing.assert_close(feats, model.norm(stages[-1]))
    # odd: 88 px, patch 4 -> 22, 11, 6, 3 tokens per side
    odd = create_model("swinv2_tiny", input_size=88, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 2, 3, 6))
    with torch.no_grad():
        sides = [int(s.shape[1] ** 0.5) for s in odd.forward_stages(torch.randn(1, 1, 88, 88))]
    assert sides == [22, 11, 6, 3] and odd.feat_sizes == sides


def test_cnn_stage_tokens_and_eff_resnet_shapes() -> None:
    model = create_model("eff_resnet18").eval()  # 112 px: stem 3x3/2 -> layer2 at 28x28x128 (seed 001)
    with torch.no_grad():
        stages = model.forward_stages(torch.randn(1, 1, 112, 112))
    assert [tuple(s.shape) for s in stages] == [(1, 56 * 56, 64), (1, 28 * 28, 128), (1, 28 * 28, 128)]
    assert len(model.ffe) == 2 and model.head.drop.p == 0.5
    big = create_model("resnet18", input_size=224)  # auto stem: ImageNet 7x7/2 + max-pool at 224
    assert isinstance(big.stem[1], nn.MaxPool2d)
    small = create_model("shufflenet_v2_x1_0", input_size=48)  # stride-1 stem under 64 px
    assert small.stem[0].stride == (1, 1)


def test_ffe_cascades_run_both_ways() -> None:
    """With the entry conv, fuse and activation removed, group 1 must see group 4 (right chain) and vice versa."""
    from lightfer.models.resnet import FFE

    ffe = FFE(16, groups=4).eval()
    ffe.conv_in, ffe.fuse, ffe.act = nn.Identity(), nn.Identity(), nn.Identity()
    x = torch.randn(1, 16, 6, 6)
    x4 = x.clone()
    x4[:, 12:] += 1.0  # perturb group 4 only
    x1 = x.clone()
    x1[:, :4] += 1.0  # perturb group 1 only
    with torch.no_grad():
        y, y4, y1 = ffe(x) - x, ffe(x4) - x4, ffe(x1) - x1
    assert (y4[:, :4] - y[:, :4]).abs().max() > 1e-4  # Y_1 depends on X_4 through the right chain
    assert (y1[:, 12:] - y[:, 12:]).abs().max() > 1e-4  # Y_4 depends on X_1 through the left chain
    with pytest.raises(ValueError):
        FFE(18, groups=4)


def test_se_head_for_any_swin_and_gates() -> None:
    from lightfer.models.heads import SqueezeExcite1d

    model = create_model("swinv2_student_64", head="se").eval()
    assert isinstance(model.head.se, SqueezeExcite1d)
    se = model.head.se
    with torch.no_grad():  # gates forced to sigmoid(+20) ~ 1 -> pre-logits equal the pooled tokens
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(20.0)
        feats = model.forward_features(torch.randn(2, 1, 64, 64))
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean(1))
        se.fc2.bias.fill_(-20.0)  # gates ~ 0 -> logits collapse to the classifier bias
        torch.testing.assert_close(model.forward_head(feats), model.head.fc.bias.expand(2, -1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="head kind"):
        create_model("swinv2_tiny", head="bogus")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_onnx_parity(name: str, tmp_path) -> None:
    model = _small(name).eval()
    s = model.pretrained_cfg.input_size
    x = torch.randn(3, 1, s, s)
    path = export_onnx(model, tmp_path / f"{name}.onnx", x[:1])  # exported at batch 1, run at batch 3
    assert check_onnx_parity(model, path, x, atol=1e-4, rtol=1e-3) < 1e-4


@pytest.mark.parametrize("name", sorted(SMALL))
def test_one_sgd_step_reduces_loss(name: str) -> None:
    kw = dict(drop_rate=0.0)
    if name.startswith("swinv2"):
        kw["drop_path_rate"] = 0.0
    model = _small(name, **kw).train()
    torch.manual_seed(1)
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "a parameter gets no gradient"
    opt.step()
    with torch.no_grad():
        loss1 = F.cross_entropy(model(x), y)
    assert loss1 < loss0 - 1e-4, (float(loss0), float(loss1))


@pytest.mark.parametrize("size", [64, 96, 112, 224])
@pytest.mark.parametrize("window", [7, 8])
def test_swin_face_sizes(size: int, window: int) -> None:
    """64/96/112/224 px faces with either window: planned shapes, padded windows, finite logits."""
    model = create_model(
        "swinv2_tiny", input_size=size, window_size=window, depths=(1, 2, 1, 1), embed_dim=12, num_heads=(1, 1, 2, 2)
    ).eval()
    sides = [size // 4]
    for _ in range(3):
        sides.append(-(-sides[-1] // 2))
    assert model.feat_sizes == sides
    for side, stage in zip(sides, model.stages):
        for blk in stage.blocks:
            assert blk.window_size == min(window, side)
            assert blk.shift_size in ((0,) if side <= window else (0, window // 2))
    assert model.stages[1].blocks[1].shift_size == (window // 2 if sides[1] > window else 0)
    with torch.no_grad():
        out = model(torch.randn(1, 1, size, size))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_swin_inference_bias_cache_never_goes_stale(tmp_path) -> None:
    model = create_model("swinv2_student_64", input_size=32, window_size=4).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        cached = model(x)  # fills the cache with inference tensors
    with torch.no_grad():
        torch.testing.assert_close(model(x), cached)
    with torch.enable_grad():  # autograd path recomputes and matches
        torch.testing.assert_close(model(x).detach(), cached)
    attn = model.stages[0].blocks[0].attn
    with torch.no_grad():  # an in-place weight update (an optimizer step) must invalidate the cache
        attn.cpb_mlp[2].weight.mul_(3.0)
        changed = model(x)
    assert (changed - cached).abs().max() > 1e-5
    fresh = create_model("swinv2_student_64", input_size=32, window_size=4).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), changed)
        model.load_state_dict(create_model("swinv2_student_64", input_size=32, window_size=4).state_dict())
        assert (model(x) - changed).abs().max() > 1e-5
    path = export_onnx(model, tmp_path / "cached.onnx", x[:1])  # export after cached inference runs
    assert check_onnx_parity(model, path, x) < 1e-4
