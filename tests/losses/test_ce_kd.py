"""Known-answer tests for CE (label smoothing, soft targets) and logit KD."""
from __future__ import annotations

import math

import pytest
import torch

from lightfer.losses import LabelSmoothingCE, LogitKD, SoftTargetCE, cross_entropy, kd_kl


def _log_softmax(z: list[float]) -> list[float]:
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def test_label_smoothing_hand_computed() -> None:
    z = [2.0, 0.0, -1.0]
    lp = _log_softmax(z)
    eps = 0.3
    # target for class 0: (1-eps) one-hot + eps/3
    expected = -((1 - eps + eps / 3) * lp[0] + eps / 3 * lp[1] + eps / 3 * lp[2])
    got = LabelSmoothingCE(eps)(torch.tensor([z]), torch.tensor([0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert LabelSmoothingCE(0.0)(torch.tensor([z]), torch.tensor([0])).item() == pytest.approx(-lp[0], rel=1e-6)


def test_soft_targets_equal_hard_for_one_hot_and_renormalise() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 8)
    y = torch.tensor([0, 3, 7, 1, 1])
    onehot = torch.nn.functional.one_hot(y, 8).float()
    assert torch.allclose(cross_entropy(z, onehot, 0.1), cross_entropy(z, y, 0.1), atol=1e-6)
    votes = torch.tensor([[6.0, 4, 0, 0, 0, 0, 0, 0]]).repeat(5, 1)
    lp = torch.log_softmax(z, 1)
    expected = -(0.6 * lp[:, 0] + 0.4 * lp[:, 1]).mean()
    assert SoftTargetCE()(z, votes).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3), -torch.ones(2, 3)])
def test_soft_target_rejects_bad_rows(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        SoftTargetCE()(torch.randn(2, 3), bad)


def test_ce_rejects_bad_shapes_and_smoothing() -> None:
    with pytest.raises(ValueError):
        cross_entropy(torch.randn(4), torch.tensor([0]))
    with pytest.raises(ValueError):
        cross_entropy(torch.randn(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError):
        LabelSmoothingCE(1.0)


def test_kd_matches_formula_by_hand() -> None:
    zs, zt, y, t, a = [1.0, 0.5, -0.5], [3.0, -1.0, 0.0], 1, 8.0, 0.4
    lq = _log_softmax([v / t for v in zs])
    lp = _log_softmax([v / t for v in zt])
    kl = sum(math.exp(p) * (p - q) for p, q in zip(lp, lq))
    ce = -_log_softmax(zs)[y]
    out = LogitKD(temperature=t, alpha=a)(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]))
    assert out["kd"].item() == pytest.approx(a * t * t * kl, rel=1e-5)
    assert out["ce"].item() == pytest.approx((1 - a) * ce, rel=1e-6)


def test_kd_is_zero_for_identical_logits_and_batch_mean() -> None:
    z = torch.randn(6, 7)
    assert kd_kl(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    zt = torch.randn(6, 7)
    per = torch.stack([kd_kl(z[i:i + 1], zt[i:i + 1], 2.0) for i in range(6)])
    assert kd_kl(z, zt, 2.0).item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_kd_gradients_reach_student_only() -> None:
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    out = LogitKD(8.0, 0.4)(zs, zt, torch.tensor([0, 1, 2, 3]))
    sum(out.values()).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_kd_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LogitKD(temperature=0.0)
    with pytest.raises(ValueError):
        LogitKD(alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        kd_kl(torch.randn(2, 3), torch.randn(2, 4), 1.0)
