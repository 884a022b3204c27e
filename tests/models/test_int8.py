"""Shipped int8 quantisation: made from calibration crops, registered with its model, served by ONNX Runtime
only for the weights it was made from, checked by sha256, scored by `lightfer eval --backend onnx`."""
import json

import numpy as np
import pytest
import torch

from lightfer.classifier import ExpressionClassifier
from lightfer.data import FERDataset, build_dataset
from lightfer.data.transforms import to_rgb
from lightfer.eval.evaluate import evaluate_classifier
from lightfer.export.quantize import quantize_int8
from lightfer.models import create_model
from lightfer.models import shipped

from ..data.synth import write_png
from .test_shipped import _tiny_run

NAME = "tiny_int8_test"


@pytest.fixture(autouse=True)
def _int8_cpu(monkeypatch):
    """These tests check serving, not the CPU: count this CPU as one with 8-bit dot products."""
    monkeypatch.setenv("LIGHTFER_INT8", "1")


@pytest.fixture(scope="module")
def shipped_int8(tmp_path_factory):
    """A tiny trained model shipped with its int8 file in a temporary weights folder."""
    out = tmp_path_factory.mktemp("weights")
    ckpt = _tiny_run(tmp_path_factory.mktemp("run"))
    shipped.ship_checkpoint(ckpt, NAME, description="test", provenance={"command": "pytest"}, crop_mode="align",
                            crop_margin=0.0, out_dir=out)
    faces = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for cls in ("happy", "sad", "neutral"):
        for i in range(24):
            write_png(faces / cls / f"{i}.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    shipped._register(out / f"{NAME}.json")
    try:
        path = shipped.ship_int8(NAME, f"folder:{faces}", split="all", num=48, seed=0, out_dir=out,
                                 evaluation={"note": "pytest"})
        yield path, faces
    finally:
        shipped._REGISTRY.pop(NAME, None)


def test_ship_int8_records_the_file_and_its_calibration(shipped_int8):
    path, _ = shipped_int8
    meta = json.loads(path.with_name(f"{NAME}.json").read_text())
    q = meta["int8"]
    assert q["file"] == path.name and len(q["sha256"]) == 64 and q["evaluation"] == {"note": "pytest"}
    assert "48 inputs of folder [all] drawn with seed 0" in q["calibration"]
    cfg = create_model(NAME, pretrained=True).pretrained_cfg
    assert cfg.int8_onnx == str(path) and "int8_onnx" not in cfg.to_dict()  # a file, not the input contract


def test_onnx_backend_serves_int8_close_to_float(shipped_int8):
    _, faces = shipped_int8
    crops = list(to_rgb(np.asarray(build_dataset(f"folder:{faces}", "all").images)))
    q = ExpressionClassifier(NAME, backend="onnx", threads=1)
    f = ExpressionClassifier(NAME, backend="onnx", threads=1, precision="fp32")
    t = ExpressionClassifier(NAME, backend="torch")
    assert (q.precision, f.precision, t.precision) == ("int8", "fp32", "fp32")
    pq, pf, pt = q.predict(crops), f.predict(crops), t.predict(crops)
    np.testing.assert_allclose(pf, pt, atol=1e-4)
    assert np.abs(pq - pf).max() < 0.1 and not np.allclose(pq, pf, atol=1e-6)  # quantised, and close
    assert (pq.argmax(1) == pf.argmax(1)).mean() >= 0.8


def test_int8_only_for_the_weights_it_was_made_from(shipped_int8):
    model = create_model(NAME, pretrained=True)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # fine-tuned / other weights
    assert ExpressionClassifier(model, backend="onnx", threads=1).precision == "fp32"
    with pytest.raises(ValueError, match="other weights"):
        ExpressionClassifier(model, backend="onnx", threads=1, precision="int8")
    with pytest.raises(ValueError, match="ships no int8"):
        ExpressionClassifier("fer_mini_xception", backend="onnx", threads=1, precision="int8")
    with pytest.raises(ValueError, match="ONNX Runtime backend"):
        ExpressionClassifier(NAME, backend="torch", precision="int8")
    with pytest.raises(ValueError, match="precision"):
        ExpressionClassifier(NAME, precision="fp16")


def test_tampered_int8_file_is_refused(shipped_int8, tmp_path):
    path, _ = shipped_int8
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(RuntimeError, match="sha256"):
            ExpressionClassifier(NAME, backend="onnx", threads=1)
    finally:
        path.write_bytes(original)


def test_eval_backend_onnx_scores_the_int8_model(shipped_int8):
    _, faces = shipped_int8
    model = create_model(NAME, pretrained=True)
    images = np.asarray(build_dataset(f"folder:{faces}", "all").images)
    ds = FERDataset(images, np.arange(len(images)) % 7, tuple(model.pretrained_cfg.classes), name="synthetic")
    r = evaluate_classifier(model, ds, latency=False, backend="onnx")
    q = ExpressionClassifier(NAME, backend="onnx", threads=1)
    crops = list(to_rgb(np.asarray(ds.images)))
    expect = (q.predict(crops).argmax(1) == np.asarray(ds.labels)).mean()
    assert r["precision"] == "int8" and r["backend"] == "onnx" and r["accuracy"] == pytest.approx(expect)
    assert evaluate_classifier(model, ds, latency=False)["precision"] == "fp32"


def test_quantize_int8_refuses_wrong_calibration_inputs(tmp_path):
    model = create_model("shufflenet_v2_x0_5", input_size=32)
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        quantize_int8(model, tmp_path / "q.onnx", np.zeros((4, 3, 32, 32), np.float32))
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("reduce_range,bound", [(False, 127), (True, 64)])
def test_quantize_int8_reduce_range_keeps_weights_in_seven_bits(tmp_path, reduce_range, bound):
    """``reduce_range`` quantises the weights to 7 bits (|q| <= 64), which AVX2's uint8 x int8 kernels cannot
    saturate; without it the per-channel scales use the full int8 range."""
    import onnx
    from onnx import numpy_helper

    model = create_model("shufflenet_v2_x0_5", input_size=32).eval()
    calib = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    path = quantize_int8(model, tmp_path / "q.onnx", calib, reduce_range=reduce_range)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 4]
    assert len(weights) > 10
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert peak <= bound and peak > bound // 2 + 1


def test_shipped_int8_model_agrees_with_its_float_weights(monkeypatch):
    """The package's int8 file of the x1.0 model: used by default in ONNX Runtime, close to float32 on real faces.

    Its weights are 7-bit (``reduce_range``), so this holds on every CPU. An 8-bit-weight file is checked only where
    ``precision="auto"`` serves it: without 8-bit dot products (an AVX2-only CPU, seen in session 20) ONNX Runtime's
    uint8 x int8 kernels saturate and the probabilities moved by up to 0.57, which is why such CPUs are served
    float32."""
    from lightfer import Analyzer
    from lightfer.classifier import int8_file
    from lightfer.examples import group_photo

    name = "shufflenet_v2_x1_0_fer2013"
    model = create_model(name, pretrained=True)
    if not model.pretrained_cfg.int8_onnx:
        pytest.skip(f"{name} ships no int8 file")
    monkeypatch.delenv("LIGHTFER_INT8")
    if int8_file(model) is None:
        pytest.skip("no 8-bit dot products on this CPU: the shipped 8-bit-weight int8 file is not served here")
    monkeypatch.setenv("LIGHTFER_INT8", "1")
    q = Analyzer(name, tta=False, threads=1)
    f = Analyzer(name, tta=False, threads=1, precision="fp32")
    assert (q.classifier.precision, f.classifier.precision) == ("int8", "fp32")
    photo = group_photo()
    rq, rf = q(photo), f(photo)
    assert len(rq.faces) == len(rf.faces) >= 4
    for a, b in zip(rq.faces, rf.faces):
        assert a.label == b.label
        assert max(abs(a.probs[k] - b.probs[k]) for k in a.probs) < 0.05


def test_benchmark_reports_the_precision_it_ran():
    from lightfer.eval.benchmark import default_image, format_table, machine_info, run_all

    rows = run_all(default_image(), ["onnx"], [1], 1, "shufflenet_v2_x1_0_fer2013", tta=False)
    rows += run_all(default_image(), ["onnx"], [1], 1, "shufflenet_v2_x1_0_fer2013", tta=False, precision="fp32")
    assert [r["precision"] for r in rows] == ["int8", "fp32"] and all(r["faces"] == 4 for r in rows)
    assert "classifier in ONNX Runtime: int8" in format_table(rows[:1], machine_info(), default_image(), 1)


def test_auto_runs_float32_on_a_cpu_without_int8_dot_products(shipped_int8, tmp_path, monkeypatch):
    from lightfer.export.quantize import cpu_has_int8_dot

    monkeypatch.delenv("LIGHTFER_INT8")
    (tmp_path / "vnni").write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n")
    (tmp_path / "avx2").write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    (tmp_path / "arm").write_text("Features : fp asimd asimddp\n")
    assert cpu_has_int8_dot(tmp_path / "vnni") and cpu_has_int8_dot(tmp_path / "arm")
    assert not cpu_has_int8_dot(tmp_path / "avx2")
    monkeypatch.setenv("LIGHTFER_INT8", "0")
    assert not cpu_has_int8_dot(tmp_path / "vnni")
    assert ExpressionClassifier(NAME, backend="onnx", threads=1).precision == "fp32"  # auto: float32 here
    assert ExpressionClassifier(NAME, backend="onnx", threads=1, precision="int8").precision == "int8"  # asked for
    # a 7-bit-weight file (reduce_range, the shipped x1.0's) cannot saturate there: auto serves it on any CPU
    assert create_model("shufflenet_v2_x1_0_fer2013", pretrained=True).pretrained_cfg.int8_any_cpu
    assert ExpressionClassifier("shufflenet_v2_x1_0_fer2013", backend="onnx", threads=1).precision == "int8"
    model = create_model(NAME, pretrained=True)
    images = np.zeros((2, 32, 32), np.uint8)
    ds = FERDataset(images, np.zeros(2), tuple(model.pretrained_cfg.classes), name="synthetic")
    assert evaluate_classifier(model, ds, latency=False, backend="onnx")["precision"] == "fp32"
