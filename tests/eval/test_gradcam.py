"""Grad-CAM: a hand-built model whose evidence sits in known regions must light exactly those regions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightfer.eval.gradcam import GradCAM, default_target_layer, overlay
from lightfer.models import create_model


class Tokens(nn.Module):
    """``(B, C, H, W)`` maps -> ``(B, H*W, C)`` tokens, as a transformer stage would give."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.flatten(2).transpose(1, 2)


class TwoBlobNet(nn.Module):
    """Channel k of the input is the evidence for class k: identity 1x1 conv, mean pool, identity FC."""

    def __init__(self, tokens: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(2, 2, 1, bias=False)
        self.tokens = Tokens() if tokens else None
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)  # (B, 2, H, W)
        if self.tokens is not None:
            return self.fc(self.tokens(a).mean(1))
        return self.fc(a.mean(dim=(2, 3)))


def _blobs() -> torch.Tensor:
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 2:6, 2:6] = 1.0  # class 0 evidence: top-left
    x[0, 1, 10:14, 9:15] = 1.0  # class 1 evidence: bottom-right
    return x


def _region_share(cam: torch.Tensor, rows: slice, cols: slice) -> float:
    return float(cam[0, rows, cols].sum() / cam[0].sum())


def test_cam_lights_the_evidence_of_the_asked_class() -> None:
    net, x = TwoBlobNet(), _blobs()
    cam = GradCAM(net, net.features)
    c0, c1 = cam(x, target=0), cam(x, target=1)
    assert c0.shape == c1.shape == (1, 16, 16)
    assert float(c0.max()) == pytest.approx(1.0) and float(c0.min()) >= 0.0
    torch.testing.assert_close(c0[0, 3:5, 3:5], torch.ones(2, 2))  # the blob centre is the peak
    assert _region_share(c0, slice(0, 8), slice(0, 8)) > 0.95
    assert _region_share(c1, slice(8, 16), slice(8, 16)) > 0.95
    assert float(c0[0, 10:14, 9:15].max()) < 1e-6  # class 0's map ignores class 1's evidence
    # default target = predicted class: make class 1 win
    x2 = x.clone()
    x2[0, 1] *= 5
    torch.testing.assert_close(cam(x2), cam(x2, target=1))


def test_token_layers_are_reshaped_to_the_grid() -> None:
    x = _blobs()
    plain = TwoBlobNet()
    maps = GradCAM(plain, plain.features)
    net = TwoBlobNet(tokens=True)
    tokens = GradCAM(net, net.tokens)
    for k in (0, 1):
        torch.testing.assert_close(tokens(x, target=k), maps(x, target=k))
    forced = GradCAM(net, net.tokens, layout="nchw")  # a wrong forced layout is an error, not a silent map
    with pytest.raises(ValueError, match="4-D"):
        forced(x, target=0)
    with pytest.raises(ValueError, match="not a square"):
        tokens(torch.zeros(1, 2, 4, 6), target=0)
    rect = GradCAM(net, net.tokens, grid=(4, 6))(torch.ones(1, 2, 4, 6), target=0)
    assert rect.shape == (1, 4, 6)
    with pytest.raises(RuntimeError, match="not reached"):
        GradCAM(net, plain.features)(x)  # a layer of another model


@pytest.mark.parametrize("name,size", [("swinv2_student_64", 64), ("eff_resnet18", 48), ("shufflenet_v2_x0_5", 48), ("resnet18", 40)])
def test_zoo_models(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, input_size=size).train()
    cam = GradCAM(model)
    x = torch.randn(2, 1, size, size)
    maps = cam(x, target=[3])
    assert maps.shape == (2, size, size) and torch.isfinite(maps).all()
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    with pytest.raises(ValueError):
        cam(x, target=7)


def test_swin_layer_is_channels_last_and_resizer_uses_backbone() -> None:
    model = create_model("swinv2_student_64", resizer=dict(in_size=32))
    assert default_target_layer(model) is model.backbone.stages[-1]
    stage2 = GradCAM(model, model.backbone.stages[1])(torch.randn(1, 1, 32, 32))
    assert stage2.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="layout"):
        GradCAM(model, layout="chw")


def test_any_cnn_falls_back_to_its_last_conv() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    assert default_target_layer(net) is net[2]
    assert GradCAM(net)(torch.randn(2, 1, 12, 12)).shape == (2, 12, 12)
    with pytest.raises(ValueError, match="pass target_layer"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_overlay() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    cam = torch.zeros(5, 5)
    cam[0, 0] = 1.0
    out = overlay(img, cam)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 2] and out[-1, -1, 2] > out[-1, -1, 0]  # jet: hot = red, cold = blue
    with pytest.raises(ValueError):
        overlay(img[..., 0], cam)
