"""dlib's face-recognition ResNet port: known answers from dlib itself, the gray stem, the file reader, training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightfer.export.onnx import check_onnx_parity, export_onnx
from lightfer.models import count_params, create_model
from lightfer.models.dlib_resnet import (
    DLIB_RGB_MEAN, DlibFormatError, DlibResNet, load_dlib_backbone, padded_add, read_dlib_face_resnet,
)
from tests.models.reference import fetched, reference_chips

FIXTURE = Path(__file__).parent / "fixtures" / "dlib_descriptors.json"


@pytest.fixture(scope="module")
def dlib_file() -> Path:
    return fetched("dlib_face_recognition_resnet_model_v1.dat")


def _chips() -> dict[str, np.ndarray]:
    return reference_chips("dlib_reference_descriptors.py")


def _dlib_input(chip: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(chip.astype(np.float32)).permute(2, 0, 1)[None]
    return (x - torch.tensor(DLIB_RGB_MEAN).view(1, 3, 1, 1)) / 256.0


def test_descriptors_match_dlib(dlib_file: Path) -> None:
    """The port with dlib's 128-d projection reproduces dlib 20.0.1's own descriptors (fixture) to 1e-5."""
    ref = json.loads(FIXTURE.read_text())["descriptors"]
    params = read_dlib_face_resnet(dlib_file)
    proj = torch.from_numpy(params["embedding.weight"])
    model = create_model("dlib_resnet_face", in_chans=3, num_classes=0, pretrained_backbone=True).eval()
    got = {}
    with torch.no_grad():
        for name, chip in _chips().items():
            got[name] = (model(_dlib_input(chip)) @ proj.T)[0].numpy()
            np.testing.assert_allclose(got[name], ref[name], atol=1e-5)
    assert np.linalg.norm(got["noise"] - got["astronaut"]) > 0.3  # two different inputs, two different answers


def test_gray_stem_equals_rgb_on_gray_faces(dlib_file: Path) -> None:
    """A gray face replicated into RGB gives the RGB network's features; the gray model gets it through its cfg."""
    torch.manual_seed(0)
    rgb = create_model("dlib_resnet_face", in_chans=3, num_classes=0, pretrained_backbone=True).eval()
    gray = create_model("dlib_resnet_face", num_classes=0, pretrained_backbone=True).eval()
    pixels = torch.rand(1, 1, 112, 112) * 255
    cfg = gray.pretrained_cfg
    with torch.no_grad():
        a = rgb(_dlib_input(pixels[0].expand(3, -1, -1).permute(1, 2, 0).numpy()))
        b = gray((pixels[:1] / 255.0 - cfg.mean[0]) / cfg.std[0])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert a.abs().max() > 0.01


def test_padded_add_is_dlibs_add_prev() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 10.0)
    out = padded_add(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 11) and torch.all(out[:, 2:] == 10) and torch.all(out[:, :, 3] == 10)
    assert torch.equal(padded_add(b, a), out)


def test_reader_rejects_other_files_naming_them(tmp_path: Path, dlib_file: Path) -> None:
    bogus = tmp_path / "not_dlib.dat"
    bogus.write_bytes(b"\x00" * 2048)
    with pytest.raises(DlibFormatError, match="not_dlib.dat"):
        read_dlib_face_resnet(bogus)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(dlib_file.read_bytes()[:3_000_000])
    with pytest.raises(DlibFormatError, match="truncated.dat"):
        read_dlib_face_resnet(truncated)
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        load_dlib_backbone(DlibResNet(in_chans=2), dlib_file)


def test_sizes_params_and_small_input_error() -> None:
    model = create_model("dlib_resnet_face").eval()
    # dlib's trunk (conv biases folded into the affines) without its 128-d projection, + a 256x7 head
    assert count_params(model) == 5_576_935
    with torch.no_grad():
        for side in (103, 112, 150):
            assert model(torch.zeros(1, 1, side, side)).shape == (1, 7)
        with pytest.raises(ValueError, match="at least 103 px"):
            model(torch.zeros(1, 1, 96, 96))
    tokens = model.forward_stages(torch.zeros(1, 1, 112, 112))
    assert [t.shape[-1] for t in tokens] == [32, 64, 128, 256, 256]


def test_fine_tuning_step_and_onnx(dlib_file: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("dlib_resnet_face", pretrained_backbone=True, num_classes=3).train()
    x, y = torch.rand(8, 1, 112, 112) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss0  # both in training mode (batch statistics)
    model.eval()
    path = export_onnx(model, tmp_path / "dlib.onnx", x[:1])
    assert check_onnx_parity(model, path, x, atol=1e-4, rtol=1e-3) < 1e-4


def test_first_training_batch_calibrates_norms_keeping_the_function(dlib_file: Path) -> None:
    torch.manual_seed(0)
    model = create_model("dlib_resnet_face", pretrained_backbone=True).eval()
    assert int(model.norms_calibrated) == 0
    x = torch.rand(8, 1, 112, 112) * 2 - 1
    with torch.no_grad():
        before = model(x)
        model.train()
        model(x)  # calibrates, then trains-mode forward updates the running stats a little
    assert int(model.norms_calibrated) == 1
    bn = model.blocks[3].bn1
    assert bn.running_var.mean() > 1.5 or bn.running_var.mean() < 0.5  # real statistics, not the identity's
    calibrated = create_model("dlib_resnet_face", pretrained_backbone=True)
    calibrated.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=True)
    fresh = create_model("dlib_resnet_face", pretrained_backbone=True)
    fresh.head.load_state_dict(model.head.state_dict())
    fresh.calibrate_norms(x)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), before, atol=1e-3, rtol=1e-3)


def test_resample_to_serves_small_crops_as_the_trainer_resized_them(tmp_path: Path) -> None:
    """``resample_to=112`` on 64 px crops gives what a model trained at ``input_size=112`` saw (the trainer's resize)."""
    from lightfer.train.data import to_model_input

    torch.manual_seed(0)
    plain = create_model("dlib_resnet_face").eval()
    inner = create_model("dlib_resnet_face", input_size=64, resample_to=112).eval()
    inner.load_state_dict(plain.state_dict())
    raw = torch.rand(3, 1, 64, 64)
    cfg = plain.pretrained_cfg
    with torch.no_grad():
        want = plain(to_model_input(raw, 112, 1, cfg.mean, cfg.std))
        got = inner(to_model_input(raw, 64, 1, cfg.mean, cfg.std))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    x = to_model_input(raw, 64, 1, cfg.mean, cfg.std)
    path = export_onnx(inner, tmp_path / "dlib64.onnx", x[:1])
    assert check_onnx_parity(inner, path, x, atol=1e-4, rtol=1e-3) < 1e-4


def test_ship_fine_tuned_run_served_at_64_px(dlib_file: Path, tmp_path: Path) -> None:
    """A fine-tuning run at 112 px ships without the training-only ``pretrained_backbone`` and, with ``serve_size``,
    is served 64 px crops that it upsamples itself: the same outputs as the run's model on the trainer's resize."""
    from lightfer.models import shipped
    from lightfer.train.checkpoint import load_model_from_checkpoint
    from lightfer.train.config import config_from_dict
    from lightfer.train.data import to_model_input
    from lightfer.train.engine import main

    cfg = config_from_dict({
        "epochs": 1, "batch_size": 16, "output_dir": str(tmp_path / "run"), "progress": False,
        "model": {"name": "dlib_resnet_face", "input_size": 112, "kwargs": {"pretrained_backbone": True}},
        "optim": {"name": "sgd", "lr": 0.001},
        "data": {"synthetic_size": 32, "synthetic_image": 64},
    })
    torch.manual_seed(0)
    main(cfg)
    ckpt = tmp_path / "run" / "best.pt"
    shipped.ship_checkpoint(ckpt, "tiny_dlib_test", description="test", provenance={"command": "pytest"},
                            serve_size=64, out_dir=tmp_path)
    meta = json.loads((tmp_path / "tiny_dlib_test.json").read_text())
    assert meta["arch_kwargs"] == {"resample_to": 112} and meta["pretrained_cfg"]["input_size"] == 64
    shipped._register(tmp_path / "tiny_dlib_test.json")
    try:
        served = create_model("tiny_dlib_test", pretrained=True).eval()
        run = load_model_from_checkpoint(ckpt).eval()
        assert int(run.norms_calibrated) == 1  # the run's first batch calibrated the norms; the flag ships
        raw = torch.rand(2, 1, 64, 64)
        c = served.pretrained_cfg
        with torch.no_grad():
            torch.testing.assert_close(served(to_model_input(raw, 64, 1, c.mean, c.std)),
                                       run(to_model_input(raw, 112, 1, c.mean, c.std)), atol=1e-5, rtol=1e-4)
    finally:
        shipped._REGISTRY.pop("tiny_dlib_test", None)
    with pytest.raises(ValueError, match="cannot resample"):
        from tests.models.test_shipped import _tiny_run

        shipped.ship_checkpoint(_tiny_run(tmp_path / "shuffle"), "x", description="t", provenance={},
                                serve_size=16, out_dir=tmp_path)
