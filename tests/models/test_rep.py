"""MobileOne-style train-time branches (``lightfer.models.rep``): folding them gives the plain layer / network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightfer.models import create_model
from lightfer.models.rep import RepConvBN, conv_bn, reparameterize


def _shake_statistics(model: nn.Module, make_input, steps: int = 3) -> None:
    """A few SGD steps in train mode so that every BatchNorm has non-trivial weights and running statistics."""
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        loss = model(make_input()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize(("cin", "cout", "k", "stride", "groups", "branches", "has_identity"), [
    (8, 8, 3, 1, 8, 1, True),    # depthwise, stride 1: 3x3 + 1x1 scale + identity
    (8, 8, 3, 2, 8, 2, False),   # depthwise, stride 2: no identity; two 3x3 branches
    (8, 8, 1, 1, 1, 1, True),    # pointwise: no scale branch, identity
    (8, 16, 1, 1, 1, 1, False),  # pointwise widening: the conv alone
    (1, 8, 3, 2, 1, 1, False),   # a stem
])
def test_folded_pair_equals_the_branches(cin: int, cout: int, k: int, stride: int, groups: int, branches: int,
                                         has_identity: bool) -> None:
    rep = RepConvBN(cin, cout, k, stride, groups, branches=branches)
    assert (rep.identity is not None) == has_identity and (rep.scale is not None) == (k > 1)
    _shake_statistics(rep, lambda: torch.randn(4, cin, 9, 9))
    x = torch.randn(2, cin, 9, 9)
    conv, bn = rep.fused()
    assert conv.bias is None and conv.kernel_size == (k, k) and conv.stride == (stride, stride)
    with torch.no_grad():
        assert torch.allclose(bn(conv(x)), rep(x), atol=1e-5)


def test_conv_bn_keeps_the_plain_slots() -> None:
    plain = conv_bn(4, 4, 3, groups=4)
    assert [type(m) for m in plain] == [nn.Conv2d, nn.BatchNorm2d]
    branched = conv_bn(4, 4, 3, groups=4, rep=2)
    assert isinstance(branched[0], RepConvBN) and isinstance(branched[1], nn.Identity)
    assert len(branched[0].convs) == 2
    with pytest.raises(ValueError, match="at least one"):
        RepConvBN(4, 4, 3, branches=0)


def test_reparameterized_shufflenet_is_the_plain_network() -> None:
    """The folded x0.5 has the plain network's exact state-dict keys and shapes and answers as the branched one."""
    model = create_model("shufflenet_v2_x0_5", input_size=64, rep=1)
    plain = create_model("shufflenet_v2_x0_5", input_size=64)
    n_rep = sum(isinstance(m, RepConvBN) for m in model.modules())
    assert n_rep == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())  # every Conv -> BN pair branched
    _shake_statistics(model, lambda: torch.randn(8, 1, 64, 64))
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        want = model(x)
    with pytest.raises(ValueError, match="eval mode"):
        reparameterize(model.train())
    model.eval()
    assert reparameterize(model) == n_rep
    assert not any(isinstance(m, RepConvBN) for m in model.modules())
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), want, atol=1e-4)
    assert reparameterize(plain) == 0  # nothing left to fold


def test_a_branched_run_loads_folded_for_inference(tmp_path: Path) -> None:
    """A ``model.kwargs: {rep: 1}`` training run: its checkpoint loads as the plain network (eval, ONNX, shipping),
    with the logits of the branched EMA weights; ``--resume`` keeps the branches (the engine builds from the config)."""
    from lightfer.train import load_model_from_checkpoint, main
    from lightfer.train.checkpoint import load_checkpoint
    from lightfer.train.config import config_from_dict

    cfg = config_from_dict({
        "epochs": 1, "batch_size": 32, "output_dir": str(tmp_path / "run"), "progress": False, "seed": 0,
        "optim": {"name": "sgd", "lr": 0.05}, "data": {"synthetic_size": 64}, "ema_decay": 0.9,
        "model": {"name": "shufflenet_v2_x0_5", "input_size": 48, "kwargs": {"rep": 1}}})
    main(cfg)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model_kwargs"] == {"rep": 1} and any(".convs.0.0.weight" in k for k in state["ema"])
    model = load_model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert not model.training and not any(isinstance(m, RepConvBN) for m in model.modules())
    branched = create_model("shufflenet_v2_x0_5", input_size=48, rep=1, classes=model.pretrained_cfg.classes)
    branched.load_state_dict(state["ema"])
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), branched.eval()(x), atol=1e-4)
    # a branched run's checkpoint starts another branched run as it is (its EMA, branches and all)
    from lightfer.train.builders import init_weights

    again = create_model("shufflenet_v2_x0_5", input_size=48, rep=1, classes=model.pretrained_cfg.classes)
    init_weights(again, str(tmp_path / "run" / "last.pt"), tuple(model.pretrained_cfg.classes))
    assert all(torch.equal(v, state["ema"][k]) for k, v in again.state_dict().items())
    # as an ensemble member it is rebuilt without the branches (the kwargs written for shipping name the plain layout)
    from lightfer.models.shipped import ensemble_of

    _, members = ensemble_of([str(tmp_path / "run" / "last.pt"), str(tmp_path / "run" / "last.pt") + "@live"])
    assert [m["kwargs"] for m in members] == [{}, {}]
    # the exported graph is the plain network's, node for node (so its ONNX Runtime latency is the plain one's)
    import collections

    import onnx

    from lightfer.export.onnx import export_onnx

    plain = create_model("shufflenet_v2_x0_5", input_size=48, classes=model.pretrained_cfg.classes).eval()
    plain.load_state_dict(model.state_dict())  # fresh weights repeat (BN ones), which the exporter would dedupe
    ops = [collections.Counter(n.op_type for n in onnx.load(str(export_onnx(m, tmp_path / f"{i}.onnx", x))).graph.node)
           for i, m in enumerate((model, plain))]
    assert ops[0] == ops[1], (ops[0] - ops[1], ops[1] - ops[0])
    assert ops[0]["Conv"] == 56, ops


def test_a_branched_model_starts_from_a_shipped_plain_model() -> None:
    """``model.init_checkpoint: shufflenet_v2_x0_5_fer2013`` with ``rep: 1``: the plain weights fill the first
    branches, the other branches start silent, so the branched model answers as the shipped one (eval mode) and its
    silent branches learn from the first step."""
    from lightfer.train.builders import init_weights

    shipped = create_model("shufflenet_v2_x0_5_fer2013", pretrained=True).eval()
    classes = tuple(shipped.pretrained_cfg.classes)
    size = shipped.pretrained_cfg.input_size
    model = create_model("shufflenet_v2_x0_5", classes=classes, input_size=size, rep=1)
    init_weights(model, "shufflenet_v2_x0_5_fer2013", classes)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), shipped(x), atol=1e-4)
    unit = model.stages[1][1].branch2[0]
    assert isinstance(unit, RepConvBN) and unit.identity is not None and float(unit.identity.weight.detach().abs().sum()) == 0
    model.train()
    model(torch.randn(4, 1, size, size)).logsumexp(1).mean().backward()
    assert unit.identity.weight.grad is not None and float(unit.identity.weight.grad.abs().sum()) > 0


def test_a_branched_model_starts_from_a_plain_checkpoint_file(tmp_path: Path, monkeypatch) -> None:
    """``model.init_checkpoint: PATH`` of a plain network with ``rep: 1``: the file is read once, and the branched
    model answers as the plain weights (eval mode)."""
    from lightfer.train import builders

    plain = create_model("shufflenet_v2_x0_5", input_size=48, classes=("a", "b", "c")).eval()
    with torch.no_grad():  # weights a fresh model would not have, so a silent load would show
        for p in plain.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    reads = []
    read = builders._state_dict_from
    monkeypatch.setattr(builders, "_state_dict_from", lambda spec: reads.append(spec) or read(spec))
    model = create_model("shufflenet_v2_x0_5", input_size=48, classes=("a", "b", "c"), rep=1)
    builders.init_weights(model, str(path), ("a", "b", "c"))
    assert reads == [str(path)]
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), plain(x), atol=1e-4)


def test_plain_weights_that_do_not_fit_are_named() -> None:
    from lightfer.models.rep import load_plain_state

    model = create_model("shufflenet_v2_x0_5", input_size=64, rep=1)
    plain = create_model("shufflenet_v2_x0_5", input_size=64).state_dict()
    missing = {k: v for k, v in plain.items() if k != "conv5.1.running_var"}
    with pytest.raises(ValueError, match="conv5.1.running_var"):
        load_plain_state(model, missing)
    with pytest.raises(ValueError, match="no place for"):
        load_plain_state(model, {**plain, "extra.weight": torch.zeros(1)})
