"""SAM against the analytic two-step update on a quadratic; wrapping, schedules and state."""
from __future__ import annotations

import pytest
import torch

from lightfer.optim import SAM, WarmupCosine, create_optimizer

A = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
W0 = torch.tensor([1.0, -2.0], dtype=torch.float64)


def _loss(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * w @ A @ w


def _analytic(w: torch.Tensor, lr: float, rho: float, adaptive: bool) -> torch.Tensor:
    g = A @ w
    if adaptive:
        e = rho * w * w * g / torch.linalg.norm(w.abs() * g)
    else:
        e = rho * g / torch.linalg.norm(g)
    return w - lr * (A @ (w + e))


@pytest.mark.parametrize("adaptive", [False, True])
def test_two_step_update_matches_analytic(adaptive: bool) -> None:
    w = torch.nn.Parameter(W0.clone())
    opt = SAM([w], torch.optim.SGD, rho=0.3, adaptive=adaptive, lr=0.1)
    _loss(w).backward()
    opt.first_step(zero_grad=True)
    g = A @ W0
    e = 0.3 * (W0 * W0 * g / torch.linalg.norm(W0.abs() * g) if adaptive else g / torch.linalg.norm(g))
    assert torch.allclose(w.detach(), W0 + e, atol=1e-12)  # at the ascent point
    _loss(w).backward()
    opt.second_step(zero_grad=True)
    assert torch.allclose(w.detach(), _analytic(W0, 0.1, 0.3, adaptive), atol=1e-12)
    assert w.grad is None


def test_closure_step_and_wrapping_an_instance_agree() -> None:
    w1, w2 = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    opt1 = SAM([w1], torch.optim.SGD, rho=0.05, lr=0.2)
    opt2 = SAM(None, torch.optim.SGD([w2], lr=0.2), rho=0.05)
    want = W0.clone()
    for _ in range(3):
        for w, opt in ((w1, opt1), (w2, opt2)):
            def closure(w=w, opt=opt) -> torch.Tensor:
                opt.zero_grad()
                loss = _loss(w)
                loss.backward()
                return loss
            closure()
            opt.step(closure)
        want = _analytic(want, 0.2, 0.05, False)
    assert torch.allclose(w1.detach(), want, atol=1e-12)
    assert torch.allclose(w2.detach(), want, atol=1e-12)


def test_sam_descends_where_plain_sgd_would_differ() -> None:
    w_sam, w_sgd = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    sam = SAM([w_sam], torch.optim.SGD, rho=0.5, lr=0.1)
    sgd = torch.optim.SGD([w_sgd], lr=0.1)
    _loss(w_sam).backward(); sam.first_step(True); _loss(w_sam).backward(); sam.second_step(True)  # noqa: E702
    _loss(w_sgd).backward(); sgd.step()  # noqa: E702
    assert not torch.allclose(w_sam, w_sgd)
    assert _loss(w_sam) < _loss(W0)


def test_schedulers_drive_the_shared_param_groups_and_state_round_trips() -> None:
    model = torch.nn.Linear(3, 2)
    opt = create_optimizer(model, "sgd", lr=0.1, sam=True, sam_rho=0.1)
    assert isinstance(opt, SAM)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(4, 3)
    model(x).square().mean().backward()
    opt.first_step(True)
    model(x).square().mean().backward()
    opt.second_step(True)
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    state = opt.state_dict()
    assert "momentum_buffer" in next(iter(state["state"].values()))
    opt2 = create_optimizer(model, "sgd", lr=0.1, sam=True)
    opt2.load_state_dict(state)
    assert opt2.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_errors() -> None:
    with pytest.raises(ValueError):
        SAM([torch.nn.Parameter(torch.zeros(1))], torch.optim.SGD, rho=-1.0, lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        SAM([torch.nn.Parameter(torch.zeros(1))], torch.optim.SGD, lr=0.1).step()
    with pytest.raises(ValueError):
        create_optimizer(torch.nn.Linear(2, 2), "rmsprop")


def test_warmup_cosine_shape() -> None:
    f = WarmupCosine(total_steps=100, warmup_steps=10, warmup_factor=0.1, min_factor=0.0)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))
