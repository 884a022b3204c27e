"""BatchNorm folding for frozen teachers: same outputs, no BN left in the folded pairs, names kept."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lightfer.models import create_model
from lightfer.models.fold import fold_batchnorm


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (fresh BN would be an identity-like fold)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "fer_mini_xception"])
def test_folded_network_computes_the_same(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, input_size=64).eval()
    _randomise_bn(model)
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        want = model(x)
    names = {n for n, _ in model.named_modules()}
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n = fold_batchnorm(model)
    assert n > 0 and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bns - n
    assert names == {n for n, _ in model.named_modules()}  # hooks registered by name still find their modules
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.equal(got, want) or n == 0  # the weights really changed


def test_folding_needs_eval_mode() -> None:
    model = create_model("shufflenet_v2_x0_5", input_size=32)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
