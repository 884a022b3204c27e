"""Known-answer tests for PDLS / F-PDLS and the prior builders."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightfer.losses import (FPDLSLoss, confusion_matrix, prior_from_confusion, prior_from_votes, uniform_prior)


def test_alpha_one_gamma_zero_is_plain_ce() -> None:
    torch.manual_seed(0)
    z, y = torch.randn(9, 7), torch.randint(0, 7, (9,))
    prior = torch.rand(7, 7)
    assert FPDLSLoss(prior, alpha=1.0, gamma=0.0)(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.9, 0.6])
def test_uniform_prior_is_label_smoothing(alpha: float) -> None:
    torch.manual_seed(1)
    z, y = torch.randn(9, 7), torch.randint(0, 7, (9,))
    got = FPDLSLoss(uniform_prior(7), alpha=alpha, gamma=0.0)(z, y)
    want = F.cross_entropy(z, y, label_smoothing=1 - alpha)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_fpdls_hand_computed() -> None:
    z = [1.0, 0.0, -1.0]
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    lp = [v - lse for v in z]
    p = [math.exp(v) for v in lp]
    d = [[0.0, 0.75, 0.25], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    alpha, gamma, k = 0.8, 2.0, 1
    want = -sum((1 - p[c]) ** gamma * (alpha * (c == k) + (1 - alpha) * d[k][c]) * lp[c] for c in range(3))
    got = FPDLSLoss(torch.tensor(d), alpha=alpha, gamma=gamma)(torch.tensor([z]), torch.tensor([k]))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_focal_term_downweights_confident_samples() -> None:
    prior = uniform_prior(3)
    confident = torch.tensor([[8.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.5, 0.0, 0.0]])
    y = torch.tensor([0])
    ratio_focal = FPDLSLoss(prior, 1.0, 2.0)(confident, y) / FPDLSLoss(prior, 1.0, 2.0)(unsure, y)
    ratio_plain = FPDLSLoss(prior, 1.0, 0.0)(confident, y) / FPDLSLoss(prior, 1.0, 0.0)(unsure, y)
    assert ratio_focal < ratio_plain * 0.01


def test_prior_from_votes_majority_and_given_labels() -> None:
    votes = np.array([[6, 4, 0], [8, 2, 0], [1, 5, 4], [0, 3, 7], [0, 0, 0]])  # last row: no votes, ignored
    prior = prior_from_votes(votes).numpy()
    np.testing.assert_allclose(prior[0], [0.7, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(prior[1], [0.1, 0.5, 0.4], atol=1e-6)
    np.testing.assert_allclose(prior[2], [0.0, 0.3, 0.7], atol=1e-6)
    # class 1 is never the majority: its row is never used as a target distribution, so it is uniform
    np.testing.assert_allclose(prior_from_votes(votes[[0, 1, 3]]).numpy()[1], [1 / 3] * 3, atol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        prior_from_votes(-votes)
    p2 = prior_from_votes(votes[[0, 1, 3]], labels=np.array([0, 1, 2])).numpy()
    np.testing.assert_allclose(p2[1], [0.8, 0.2, 0.0], atol=1e-6)


def test_prior_from_confusion_normalises_rows_and_rejects_empty_rows() -> None:
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]])
    labels = torch.tensor([0, 1, 1, 2, 2])
    cm = confusion_matrix(logits, labels, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    np.testing.assert_allclose(prior_from_confusion(cm).numpy()[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(prior_from_confusion(np.array([[1.0, 0], [0, 0]])).numpy(), [[1, 0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to zero"):
        FPDLSLoss(torch.tensor([[1.0, 0], [0, 0]]))  # an explicit prior must be complete


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        FPDLSLoss(torch.rand(3, 4))
    with pytest.raises(ValueError):
        FPDLSLoss(uniform_prior(3), alpha=2.0)
    loss = FPDLSLoss(uniform_prior(3))
    with pytest.raises(ValueError):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        loss(torch.randn(2, 3), torch.rand(2, 3))
