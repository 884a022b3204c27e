"""MediaPipe Face Mesh port: known answers from the TFLite interpreter, the gray stem, the reader, training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightfer.export.onnx import check_onnx_parity, export_onnx
from lightfer.models import count_params, create_model
from lightfer.models.facemesh import (
    FaceMeshBlock, FaceMeshFormatError, load_facemesh_landmarker, read_face_landmark_tflite, tf_same_pad,
)
from tests.models.reference import fetched, reference_chips

FIXTURE = Path(__file__).parent / "fixtures" / "facemesh_reference.json"


@pytest.fixture(scope="module")
def tflite_file() -> Path:
    return fetched("mediapipe_face_landmark.tflite")


def _chips() -> dict[str, np.ndarray]:
    return reference_chips("facemesh_reference.py")


def test_points_and_face_logit_match_the_tflite_interpreter(tflite_file: Path) -> None:
    """The whole port reproduces ai-edge-litert 2.3.0's outputs (fixture) to 1e-3 px, and tells a face from noise."""
    ref = json.loads(FIXTURE.read_text())
    model = load_facemesh_landmarker(tflite_file)
    with torch.no_grad():
        for name, chip in _chips().items():
            x = torch.from_numpy(chip.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
            points, logit = model(x)
            assert points.shape == (1, 468, 3)
            np.testing.assert_allclose(points[0].reshape(-1).numpy(), ref["points"][name], atol=2e-3)
            assert abs(float(logit[0]) - ref["face_logit"][name]) < 1e-3
    assert ref["face_logit"]["astronaut"] > 5 > -5 > ref["face_logit"]["noise"]
    pts = np.asarray(ref["points"]["astronaut"]).reshape(468, 3)
    assert pts[:, :2].min() > 10 and pts[:, :2].max() < 182  # the mesh lies on the face, inside the crop


def test_gray_stem_equals_rgb_on_gray_faces(tflite_file: Path) -> None:
    """A gray image replicated into RGB gives the RGB trunk's features; the gray model takes it directly."""
    torch.manual_seed(0)
    rgb = create_model("facemesh_face", in_chans=3, num_classes=0, pretrained_backbone=True).eval()
    gray = create_model("facemesh_face", num_classes=0, pretrained_backbone=True).eval()
    pixels = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        a, b = rgb(pixels.expand(-1, 3, -1, -1)), gray(pixels)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert a.abs().max() > 0.01 and gray.pretrained_cfg.mean == (0.0,) and gray.pretrained_cfg.std == (1.0,)


def test_tf_same_pad_and_blocks_on_odd_sides() -> None:
    x = torch.ones(1, 1, 6, 7)
    assert tf_same_pad(x, 3, 2).shape[-2:] == (7, 9)  # 6 -> pad 0 + 1; 7 -> pad 1 + 1
    assert tf_same_pad(x, 3, 1).shape[-2:] == (8, 9)  # 1 + 1 each
    block = FaceMeshBlock(4, 8, 2)
    assert block(torch.rand(2, 4, 7, 7)).shape == (2, 8, 4, 4)
    with pytest.raises(ValueError, match="channels may only grow"):
        FaceMeshBlock(8, 4)


def test_reader_rejects_other_files_naming_them(tmp_path: Path, tflite_file: Path) -> None:
    bogus = tmp_path / "not_a_model.tflite"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(FaceMeshFormatError, match="not_a_model.tflite"):
        read_face_landmark_tflite(bogus)
    params = read_face_landmark_tflite(tflite_file)
    assert params["conv2d_21/Kernel"].shape == (1404, 3, 3, 32) and params["conv2d_1/Kernel"].dtype == np.float32
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        create_model("facemesh_face", in_chans=2)


def test_sizes_and_params() -> None:
    model = create_model("facemesh_face").eval()
    assert count_params(model) == 170_455  # trunk and mesh blocks (gray stem) + a norm and a 128x7 head
    with torch.no_grad():
        for side in (64, 112, 128, 192):
            assert model(torch.zeros(1, 1, side, side)).shape == (1, 7)
        assert model.forward_features(torch.zeros(1, 1, 192, 192)).shape == (1, 128, 3, 3)


def test_fine_tuning_step_and_onnx(tflite_file: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("facemesh_face", pretrained_backbone=True, num_classes=3, input_size=64,
                         resample_to=128).train()
    x, y = torch.rand(8, 1, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss0
    model.eval()
    path = export_onnx(model, tmp_path / "facemesh.onnx", x[:1])
    assert check_onnx_parity(model, path, x, atol=1e-4, rtol=1e-3) < 1e-4
