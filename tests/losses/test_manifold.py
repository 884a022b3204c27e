"""Fine-grained manifold distillation: known answers, exact chunking, width invariance, bounded memory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightfer.losses import ManifoldDistillation, pool_tokens, relation_distance, to_tokens


def _naive(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a @ a.transpose(1, 2) - b @ b.transpose(1, 2)).square().sum()


def _naive_md(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = fs.shape[:2]
    intra = _naive(fs, ft) / (b * n * n)
    inter = _naive(fs.transpose(0, 1), ft.transpose(0, 1)) / (n * b * b)
    return intra, inter


def test_hand_computed_case() -> None:
    fs = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # relation map I
    ft = torch.tensor([[[3.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # relation map of ones (width 3)
    md = ManifoldDistillation(1.0, 1.0, 1.0, num_samples=2)
    parts = md.layer_losses(fs, ft)
    assert parts["intra"].item() == pytest.approx(2 / 4)  # ‖[[0,-1],[-1,0]]‖² / (B·N²)
    assert parts["inter"].item() == pytest.approx(0.0)  # one image: 1×1 maps are both [1]
    assert parts["rand"].item() == pytest.approx(2 / 4)  # K = B·N = 2: the same pair of tokens
    assert md([fs], [ft]).item() == pytest.approx(1.0)
    assert ManifoldDistillation(2.0, 1.0, 0.0)([fs], [ft]).item() == pytest.approx(1.0)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
def test_chunked_equals_unchunked_value_and_gradient(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 16, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 16, 9, generator=g, dtype=torch.float64)
    got = relation_distance(a, b, chunk=chunk)
    (ga,) = torch.autograd.grad(got, a)
    want = _naive(a, b)
    (wa,) = torch.autograd.grad(want, a)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    assert torch.allclose(ga, wa, rtol=1e-10, atol=1e-14)


def test_autocast_does_not_lower_the_precision() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 64, 16, requires_grad=True), torch.randn(4, 64, 24)
    want = relation_distance(a, b, chunk=16)
    (g_want,) = torch.autograd.grad(want, a)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # without the guard: 4e-4 relative error here
        got = relation_distance(a, b, chunk=16)
    (g_got,) = torch.autograd.grad(got, a)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


def test_gradient_to_teacher_when_it_requires_grad() -> None:
    a = torch.randn(2, 6, 4, dtype=torch.float64)
    b = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    (gb,) = torch.autograd.grad(relation_distance(a, b, chunk=4), b)
    (wb,) = torch.autograd.grad(_naive(a, b), b)
    assert torch.allclose(gb, wb, rtol=1e-10, atol=1e-14)


def test_matches_naive_definitions_of_intra_and_inter() -> None:
    torch.manual_seed(1)
    fs, ft = torch.randn(4, 9, 6), torch.randn(4, 9, 12)
    parts = ManifoldDistillation(num_samples=36, chunk=4).layer_losses(fs, ft)
    intra, inter = _naive_md(fs, ft)
    assert parts["intra"].item() == pytest.approx(intra.item(), rel=1e-5)
    assert parts["inter"].item() == pytest.approx(inter.item(), rel=1e-5)
    # K = B·N: the random loss sees every token once, in some order (the norm is order-free)
    all_tokens = _naive(fs.reshape(1, 36, 6), ft.reshape(1, 36, 12)) / 36**2
    assert parts["rand"].item() == pytest.approx(all_tokens.item(), rel=1e-5)


def test_zero_for_equal_features_and_invariant_to_width() -> None:
    torch.manual_seed(2)
    fs = torch.randn(3, 16, 8)
    q, _ = torch.linalg.qr(torch.randn(24, 8))  # (24, 8) orthonormal columns: embeds width 8 into 24
    ft_wide = fs @ q.T  # (3, 16, 24), same relations as fs
    md = ManifoldDistillation(1.0, 1.0, 1.0, num_samples=20)
    assert md([fs], [fs.clone()]).item() == pytest.approx(0.0, abs=1e-10)
    assert md([fs], [ft_wide]).item() == pytest.approx(0.0, abs=1e-9)
    other = torch.randn(3, 16, 5)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    v1 = md([other], [fs], generator=gen()).item()
    v2 = md([other], [ft_wide], generator=gen()).item()
    assert v1 > 1e-3 and v2 == pytest.approx(v1, rel=1e-5)
    # per-token positive scaling of the teacher changes nothing (ψ normalises)
    v3 = md([other], [fs * torch.rand(3, 16, 1).add(0.5)], generator=gen()).item()
    assert v3 == pytest.approx(v1, rel=1e-5)


def test_gradient_flows_to_student_only() -> None:
    fs = torch.randn(2, 9, 4, requires_grad=True)
    ft = torch.randn(2, 9, 6, requires_grad=True)
    ManifoldDistillation()([fs], [ft]).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None


def test_layouts_and_token_grid_matching() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 5, 4, 4)  # (B, C, H, W)
    nlc = to_tokens(x)
    assert nlc.shape == (2, 16, 5)
    assert torch.equal(to_tokens(x.permute(0, 2, 3, 1), "nhwc"), nlc)
    md = ManifoldDistillation(1.0, 1.0, 0.0)
    t = torch.randn(2, 7, 4, 4)
    assert md([x], [t]).item() == pytest.approx(md([nlc], [to_tokens(t)]).item(), rel=1e-6)
    # a finer teacher grid (8×8) is average-pooled onto the student's 4×4
    fine = torch.randn(2, 3, 8, 8)
    assert md([x], [fine]).item() == pytest.approx(md([x], [F.avg_pool2d(fine, 2)]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        md([torch.randn(2, 10, 4)], [torch.randn(2, 12, 4)])
    with pytest.raises(ValueError, match="layout"):
        to_tokens(torch.randn(2, 3), "auto")
    with pytest.raises(ValueError):
        md([x], [])


def test_fixed_grids_pool_both_sides() -> None:
    """``grids``: both maps are pooled to g x g tokens, so teachers can be compared on one grid size."""
    torch.manual_seed(4)
    s16, t16, t13 = torch.randn(2, 5, 16, 16), torch.randn(2, 7, 16, 16), torch.randn(2, 7, 13, 13)
    plain = ManifoldDistillation(1.0, 1.0, 0.0)
    fixed = ManifoldDistillation(1.0, 1.0, 0.0, grids=[13])
    pooled = [F.adaptive_avg_pool2d(s16, 13)], [F.adaptive_avg_pool2d(t16, 13)]
    assert fixed([s16], [t16]).item() == pytest.approx(plain(*pooled).item(), rel=1e-5)
    assert fixed([s16], [t16]).item() != pytest.approx(plain([s16], [t16]).item(), rel=1e-3)
    # a 13x13 teacher against a 16x16 student: the same as pooling the finer to the coarser
    assert fixed([s16], [t13]).item() == pytest.approx(plain([s16], [t13]).item(), rel=1e-6)
    two = ManifoldDistillation(1.0, 1.0, 0.0, grids=[8, 4])
    expect = sum(plain([F.avg_pool2d(s16, k)], [F.avg_pool2d(t16, k)]) for k in (2, 4))
    assert two([s16, s16], [t16, t16]).item() == pytest.approx(expect.item(), rel=1e-5)
    tokens = to_tokens(s16)
    assert pool_tokens(tokens, 16) is tokens and pool_tokens(tokens, 5).shape == (2, 25, 5)
    with pytest.raises(ValueError, match="cannot pool a 13x13"):
        ManifoldDistillation(grids=[16])([s16], [t13])
    with pytest.raises(ValueError, match="1 grids for 2 layer pairs"):
        fixed([s16, s16], [t16, t16])
    with pytest.raises(ValueError, match="square"):
        pool_tokens(torch.randn(2, 10, 3), 2)
    with pytest.raises(ValueError, match="grids"):
        ManifoldDistillation(grids=[0])


def test_student_and_teacher_layouts_can_differ() -> None:
    """A Swin student's (B, H, W, C) stages against a CNN teacher's (B, C, H, W) maps."""
    torch.manual_seed(5)
    s, t = torch.randn(3, 4, 4, 6), torch.randn(3, 9, 4, 4)  # student nhwc, teacher nchw
    mixed = ManifoldDistillation(1.0, 1.0, 0.0, layout="nhwc", teacher_layout="nchw")
    same = ManifoldDistillation(1.0, 1.0, 0.0, layout="nchw")
    assert mixed([s], [t]).item() == pytest.approx(same([s.permute(0, 3, 1, 2)], [t]).item(), rel=1e-6)
    # read with one layout for both, the teacher's channels would be taken for rows of tokens: a different loss
    wrong = ManifoldDistillation(1.0, 1.0, 0.0, layout="nhwc")
    assert wrong([s], [t]).item() != pytest.approx(mixed([s], [t]).item(), rel=1e-3)


def test_autograd_never_holds_a_full_relation_map() -> None:
    n, chunk = 1024, 64  # a 32×32-token stage
    fs = torch.randn(2, n, 8, requires_grad=True)
    ft = torch.randn(2, n, 16)
    biggest = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        biggest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = ManifoldDistillation(1.0, 1.0, 1.0, num_samples=256, chunk=chunk)([fs], [ft])
    loss.backward()
    assert max(biggest) <= 2 * n * 16  # token-sized tensors only, never N×N = 1,048,576 per image
    assert torch.isfinite(fs.grad).all()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ManifoldDistillation(lambda_intra=-1.0)
    with pytest.raises(ValueError):
        relation_distance(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
    with pytest.raises(ValueError):
        relation_distance(torch.randn(2, 3, 4), torch.randn(2, 3, 4), chunk=0)
