"""Neural Resizer (seed 002): known answers for its parts and ``create_model(..., resizer=...)`` on any backbone."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightfer.export.onnx import check_onnx_parity, export_onnx
from lightfer.models import create_model
from lightfer.models.resizer import STN, NeuralResizer, ResizedModel, ResizerCfg


def test_zero_residuals_give_bilinear_resizing() -> None:
    r = NeuralResizer(1, 40, ResizerCfg(scale=2.0, blocks=2)).eval()
    with torch.no_grad():
        for conv in (r.sr[-1], r.out):
            conv.weight.zero_()
        x = torch.rand(2, 1, 23, 23)
        want = F.interpolate(F.interpolate(x, size=(46, 46), mode="bilinear"), size=(40, 40), mode="bilinear")
        torch.testing.assert_close(r(x), want)
        r.out.weight.normal_()  # the learned path must matter once it is non-zero
        assert (r(x) - want).abs().max() > 1e-3


def test_scale_one_without_blocks_skips_the_identity_resample() -> None:
    """The cheapest seed-002 setting (scale 1, no residual block): the same answer as resampling at the same size."""
    torch.manual_seed(0)
    r = NeuralResizer(1, 64, ResizerCfg(in_size=48, filters=4, scale=1.0, blocks=0)).eval()
    assert len(r.blocks) == 0
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        r.out.weight.normal_()
        r.sr[-1].weight.normal_()
        same = F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
        up = same + r.sr(same)
        size = (64, 64)
        feat = F.interpolate(r.head(up), size=size, mode="bilinear", align_corners=False)
        want = F.interpolate(up, size=size, mode="bilinear", align_corners=False) + r.out(feat + r.tail(feat))
        torch.testing.assert_close(r(x), want)


def test_stn_identity_at_init_and_matches_affine_grid() -> None:
    stn = STN(1).eval()
    x = torch.rand(2, 1, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(stn(x), x, atol=1e-5, rtol=0)
        stn.fc[2].bias.copy_(torch.tensor([0.8, 0.1, 0.25, -0.1, 0.9, -0.2]))
        theta = stn.theta(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        want = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        got = stn(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - x).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["swinv2_student_64", "shufflenet_v2_x0_5", "eff_resnet18"])
def test_create_model_wraps_any_backbone(name: str) -> None:
    model = create_model(name, resizer=dict(in_size=24, stn=True), input_size=32).eval()
    assert isinstance(model, ResizedModel)
    assert model.pretrained_cfg.input_size == 24 and model.resizer.out_size == 32
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        logits = model(x)
        via_backbone = model.backbone(model.resizer(x))
        split = model.forward_head(model.forward_features(x))
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, via_backbone)
    torch.testing.assert_close(logits, split)
    assert len(model.forward_stages(x)) >= 3


def test_resizer_specs_and_errors() -> None:
    assert create_model("shufflenet_v2_x0_5", resizer=True).pretrained_cfg.input_size == 48
    stn = create_model("shufflenet_v2_x0_5", resizer="stn")
    assert isinstance(stn.resizer.stn, STN)
    plain = create_model("shufflenet_v2_x0_5", resizer=False)
    assert not isinstance(plain, ResizedModel) and plain.pretrained_cfg.input_size == 112
    with pytest.raises(ValueError, match="unknown resizer options"):
        create_model("shufflenet_v2_x0_5", resizer=dict(size=48))
    with pytest.raises(ValueError):
        create_model("shufflenet_v2_x0_5", resizer="bicubic")


def test_resizer_trains_and_exports(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("shufflenet_v2_x0_5", resizer=dict(in_size=20, stn=True), input_size=32)
    with torch.no_grad():  # a non-identity warp, so the exported grid sampling is really checked
        model.resizer.stn.fc[2].bias.copy_(torch.tensor([0.9, 0.1, 0.1, -0.1, 0.9, 0.05]))
    x, y = torch.randn(4, 1, 20, 20), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    assert model.resizer.sr[0].weight.grad.abs().sum() > 0 and model.resizer.stn.fc[2].weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss0
    model.eval()
    path = export_onnx(model, tmp_path / "resized.onnx", x[:1])
    assert check_onnx_parity(model, path, x) < 1e-4
