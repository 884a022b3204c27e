"""The ``lightfer`` command end to end, through a subprocess."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def lightfer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lightfer", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, astronaut, portraits):
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    Image.fromarray(astronaut).save(d / "astro.png")
    (d / "sub" / "trump.jpg").write_bytes(portraits["trump"].read_bytes())
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.webp").write_text("not an image")
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(d / "blank.bmp")
    return d


def test_help_has_examples():
    for verb in ("predict", "classify", "benchmark", "fetch", "export"):
        out = lightfer(verb, "--help")
        assert out.returncode == 0 and "examples:" in out.stdout and f"lightfer {verb}" in out.stdout


def test_unknown_option_is_an_error():
    out = lightfer("predict", "x.jpg", "--no-such-option")
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr


def test_predict_folder_json_annotations_and_failures(folder, tmp_path):
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = lightfer("predict", folder, "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv", "--save-dir", folder)
    assert out.returncode == 1  # two unreadable files
    assert "zero.jpg" in out.stderr and "text.webp" in out.stderr
    recs = json.loads((tmp_path / "r.json").read_text())
    by_name = {Path(r["source"]).name: r for r in recs}
    assert set(by_name) == {"astro.png", "trump.jpg", "zero.jpg", "text.webp", "blank.bmp"}
    assert by_name["astro.png"]["faces"][0]["label"] == "happy"
    assert len(by_name["trump.jpg"]["faces"]) == 1
    assert by_name["blank.bmp"]["faces"] == [] and by_name["blank.bmp"]["error"] is None
    assert by_name["zero.jpg"]["error"] and by_name["text.webp"]["error"]
    # annotated copies next to the inputs never replace them
    for p, data in before.items():
        assert p.read_bytes() == data
    assert (folder / "astro_annotated.png").exists() and (folder / "sub" / "trump_annotated.jpg").exists()
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0].startswith("source,face,x1") and len(rows) == 1 + 5  # 2 faces + 3 face-less images


def test_predict_json_stdout_and_exit_zero(tmp_path):
    out = lightfer("predict", REPO / "examples" / "group.jpg", "--json", "-", "--save-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    recs = json.loads(out.stdout)
    assert len(recs) == 1 and len(recs[0]["faces"]) == 4
    assert (tmp_path / "group.jpg").exists()


def test_classify_crops_same_schema(folder):
    out = lightfer("classify", folder / "astro.png", folder / "zero.jpg", "--json", "-", "-q")
    assert out.returncode == 1
    recs = json.loads(out.stdout)
    assert recs[0]["faces"][0]["box"] == [0.0, 0.0, 512.0, 512.0]
    assert set(recs[0]["faces"][0]) == {"box", "score", "landmarks", "label", "confidence", "probs"}
    assert recs[1]["error"] and "zero.jpg" in recs[1]["error"]


def test_no_images_found(tmp_path):
    out = lightfer("predict", tmp_path)
    assert out.returncode == 1 and "no images found" in out.stderr


def test_export_model_and_detector_with_parity(tmp_path):
    import onnxruntime as ort

    out = lightfer("export", "fer_mini_xception", "--out", tmp_path / "m.onnx")
    assert out.returncode == 0, out.stderr
    assert "max |ONNX - PyTorch|" in out.stdout and '"crop_mode": "box"' in out.stdout
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 1, 64, 64), np.float32)})[0]
    assert y.shape == (3, 7)
    out = lightfer("export", "detector", "--out", tmp_path / "d.onnx")
    assert out.returncode == 0, out.stderr
    out = lightfer("export", "no_such_model", "--out", tmp_path / "x.onnx")
    assert out.returncode != 0 and "unknown model" in out.stderr
