"""Analyzer end to end on real photos: faces, labels, batches with bad inputs, both backends."""
import json

import numpy as np
import pytest
from PIL import Image

import lightfer
from lightfer.io import read_image


@pytest.fixture(scope="module")
def analyzer():
    return lightfer.Analyzer()


@pytest.fixture(scope="module")
def group():
    from pathlib import Path

    return read_image(Path(__file__).resolve().parents[2] / "examples" / "group.jpg")


def test_smiling_astronaut_is_happy(analyzer, astronaut):
    res = analyzer(astronaut)
    assert len(res.faces) == 1
    f = res.faces[0]
    assert f.label == "happy" and f.confidence > 0.8
    assert set(f.probs) == set(analyzer.classes) and abs(sum(f.probs.values()) - 1) < 1e-4
    assert set(res.timings) == {"decode", "detect", "align", "classify"}


def test_group_example_four_smiles(analyzer, group):
    res = analyzer(group)
    assert len(res.faces) == 4
    assert [f.label for f in res.faces] == ["happy"] * 4
    assert res.image_size == (640, 480)


def test_input_kinds_agree(analyzer, portraits):
    path = portraits["trump"]
    a = analyzer(path)
    b = analyzer(Image.open(path))
    c = analyzer(read_image(path))
    d = analyzer(path.read_bytes())
    for r in (b, c, d):
        assert len(r.faces) == 1
        np.testing.assert_allclose(r.faces[0].box, a.faces[0].box, atol=1e-3)
        assert r.faces[0].label == a.faces[0].label == "happy"
    assert a.source == str(path)


def test_gray_rgba_16bit_exif_inputs(analyzer, astronaut, tmp_path):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert len(analyzer(gray).faces) == 1
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert len(analyzer(rgba).faces) == 1
    g16 = gray.astype(np.uint16) * 257
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    assert len(analyzer(p16).faces) == 1
    # stored rotated, EXIF says "rotate 90 CW": the face must be found upright and still smile
    exif = Image.Exif()
    exif[0x0112] = 8
    pr = tmp_path / "rot.jpg"
    Image.fromarray(astronaut).rotate(-90, expand=True).save(pr, exif=exif, quality=95)
    res = analyzer(pr)
    assert len(res.faces) == 1 and res.faces[0].label == "happy"


def test_batch_reports_bad_files_and_keeps_the_rest(analyzer, portraits, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = analyzer.analyze_batch([portraits["trump"], bad, empty, portraits["obama"]])
    assert [r.ok for r in results] == [True, False, False, True]
    assert "broken.jpg" in results[1].error and "empty.png" in results[2].error
    assert len(results[0].faces) == len(results[3].faces) == 1


def test_to_dict_is_json_schema(analyzer, astronaut):
    d = json.loads(json.dumps(analyzer(astronaut, source="astro").to_dict()))
    assert set(d) >= {"source", "width", "height", "faces", "timings_ms", "error"}
    f = d["faces"][0]
    assert set(f) == {"box", "score", "landmarks", "label", "confidence", "probs"}
    assert len(f["box"]) == 4 and len(f["landmarks"]) == 5 and all(len(p) == 2 for p in f["landmarks"])


def test_classify_crops(analyzer, astronaut):
    res = analyzer(astronaut)
    crop = analyzer.align(astronaut, res.faces)[0]
    probs = analyzer.classify([crop, crop[:, ::-1].copy()])
    assert probs.shape == (2, len(analyzer.classes))
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert analyzer.classes[int(probs[0].argmax())] == "happy"
    np.testing.assert_allclose(probs[0], list(res.faces[0].probs.values()), atol=1e-5)
    assert analyzer.classify([]).shape == (0, 7)


def test_torch_backend_agrees_with_onnx(analyzer, group):
    t = lightfer.Analyzer(backend="torch")
    a, b = analyzer(group), t(group)
    assert len(a.faces) == len(b.faces)
    for fa, fb in zip(a.faces, b.faces):
        np.testing.assert_allclose(list(fa.probs.values()), list(fb.probs.values()), atol=1e-3)


def test_no_face_image_gives_empty_result(analyzer):
    res = analyzer(np.full((200, 300, 3), 128, np.uint8))
    assert res.ok and res.faces == []


def test_annotate_draws_on_a_copy(analyzer, group):
    from lightfer.draw import annotate

    res = analyzer(group)
    out = annotate(group, res)
    assert out.shape == group.shape and not np.shares_memory(out, group)
    x1, y1, x2, y2 = res.faces[0].box.astype(int)
    assert (out[y1:y2, x1] != group[y1:y2, x1]).any()  # the box edge is drawn


def test_tta_switch_overrides_the_model_setting(analyzer, group):
    """``Analyzer(tta=...)`` and ``--tta / --no-tta`` override the model's ``tta_flip``: with it on, each face's
    probabilities are the mean of the crop's and its mirror's."""
    from lightfer.cli import build_parser
    from lightfer.cli.common import build_analyzer

    default = analyzer.classifier.tta_flip
    assert default == analyzer.classifier.cfg.tta_flip
    on, off = lightfer.Analyzer(tta=True), lightfer.Analyzer(tta=False)
    assert on.classifier.tta_flip and not off.classifier.tta_flip
    faces = on.detector.detect(group)
    crops = on.align(group, faces)
    mean = (off.classifier.predict(crops) + off.classifier.predict([c[:, ::-1] for c in crops])) / 2
    np.testing.assert_allclose(on.classifier.predict(crops), mean, atol=1e-5)
    assert np.abs(on.classifier.predict(crops) - off.classifier.predict(crops)).max() > 1e-3
    for flag, want in (("--tta", True), ("--no-tta", False), (None, default)):
        args = build_parser().parse_args(["predict", "x.jpg", *([flag] if flag else [])])
        assert build_analyzer(args).classifier.tta_flip is want
