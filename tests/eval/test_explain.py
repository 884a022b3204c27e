"""`lightfer explain`: Grad-CAM PNGs per face and overview, Swin / resizer / checkpoint models, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lightfer.cli import main
from lightfer.eval.explain import Explainer, explain_layer, heat_overlay, load_explained_model
from lightfer.models import create_model


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_crop(tmp_path_factory, astronaut):
    """The astronaut's face shrunk to 20x24 px: a low-resolution face crop."""
    path = tmp_path_factory.mktemp("crop") / "tiny.png"
    Image.fromarray(astronaut[56:176, 177:270]).resize((20, 24), Image.BILINEAR).save(path)
    return path


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_astronaut_writes_face_png_and_overview(astro_png, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["explain", str(astro_png), "--model", "fer_mini_xception", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_face0.png", "astronaut_overview.png", "explain.json"]
    rec = json.loads((out / "explain.json").read_text())
    assert rec["layer"] == "blocks.3" and rec["random_weights"] is False
    (face,) = rec["inputs"][0]["faces"]
    assert face["label"] == face["target"] == "happy" and face["confidence"] > 0.8
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # the detector's box around her face
    assert "happy" in capsys.readouterr().out
    fig, overview = _png(out / "astronaut_face0.png"), _png(out / "astronaut_overview.png")
    assert fig.shape[0] > 200 and fig.shape[1] > 200 and fig.std() > 20
    assert overview.shape[1] >= 512 and overview.shape[0] > overview.shape[1]  # image + a row of insets below


def test_astronaut_heat_is_on_the_face_centre(astronaut):
    from lightfer.pipeline import Analyzer

    model, _, untrained = load_explained_model("fer_mini_xception")
    assert not untrained
    analyzer = Analyzer(model, classifier_backend="torch")
    faces = analyzer.detector.detect(astronaut)
    assert len(faces) == 1
    ex = Explainer(model)
    crops = analyzer.align(astronaut, faces)
    (e,) = ex.explain(crops)
    s = model.pretrained_cfg.input_size
    assert e.cam.shape == (s, s) and e.crop.shape == (s, s, 3)
    assert e.cam.max() == pytest.approx(1.0) and e.cam.min() >= 0 and e.cam.std() > 0.15  # not a constant map
    centre = e.cam[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].sum() / e.cam.sum()
    assert centre > 0.5  # a uniform map would put 25% of its mass in the central quarter
    (sad,) = ex.explain(crops, target="sad")
    assert sad.target == "sad" and sad.label == "happy" and not np.allclose(sad.cam, e.cam, atol=0.05)
    assert "Grad-CAM for sad" in sad.title() and "predicted happy" in sad.title()


def test_default_and_named_layers():
    assert explain_layer(create_model("fer_mini_xception"))[0] == "blocks.3"
    assert explain_layer(create_model("swinv2_student_64"))[0] == "stages.2"  # second-to-last Swin stage
    assert explain_layer(create_model("swinv2_student_64", resizer=dict(in_size=32)))[0] == "backbone.stages.2"
    assert explain_layer(create_model("shufflenet_v2_x0_5"))[0] == "stages.1"  # 7x7 at 112 px, not 4x4
    assert explain_layer(create_model("shufflenet_v2_x0_5", input_size=64))[0] == "stages.1"
    assert explain_layer(create_model("shufflenet_v2_x0_5", input_size=224))[0] == "conv5"
    net = create_model("resnet18")
    name, layer = explain_layer(net, "stages.1")
    assert name == "stages.1" and layer is net.stages[1]
    with pytest.raises(ValueError, match="no layer 'stages.9'.*stages.0"):
        explain_layer(net, "stages.9")
    with pytest.raises(ValueError, match="no layer ''"):
        explain_layer(net, "")


def test_swin_student_on_a_tiny_crop(tiny_crop, tmp_path, capsys):
    out = tmp_path / "swin"
    rc = main(["explain", str(tiny_crop), "--crops", "--model", "swinv2_student_64", "--out", str(out),
               "--class", "SAD"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["explain.json", "tiny_face0.png"]  # no overview for crops
    rec = json.loads((out / "explain.json").read_text())
    assert rec["random_weights"] is True and "RANDOM" in rec["weights"] and rec["layer"] == "stages.2"
    assert rec["inputs"][0]["faces"][0]["target"] == "sad" and rec["inputs"][0]["faces"][0]["box"] is None
    assert "RANDOM" in capsys.readouterr().err


def test_resizer_model_saves_the_resizer_view(tiny_crop, tmp_path):
    out = tmp_path / "rs"
    rc = main(["explain", str(tiny_crop), "--crops", "--model", "fer_mini_xception", "--resizer", "--out", str(out)])
    assert rc == 0
    assert (out / "tiny_face0.png").is_file() and (out / "tiny_face0_resizer.png").is_file()
    view = _png(out / "tiny_face0_resizer.png")
    assert view.shape[1] > 2 * view.shape[0]  # three panels side by side
    model = create_model("fer_mini_xception", pretrained=True, resizer=True).eval()
    (e,) = Explainer(model).explain([_png(tiny_crop)])
    assert e.cam.shape == (48, 48)  # the map covers the low-resolution input the model reads
    (_, inp), (_, bil), (_, learned) = e.resizer_views
    assert inp.shape == (48, 48, 3) and bil.shape == learned.shape == (64, 64, 3)
    diff = np.abs(bil.astype(int) - learned.astype(int))
    assert diff.mean() < 8  # an untrained resizer starts close to bilinear resizing ...
    torch.manual_seed(0)
    with torch.no_grad():
        model.resizer.out.weight.normal_(std=0.5)
    (e2,) = Explainer(model).explain([_png(tiny_crop)])
    assert np.abs(e2.resizer_views[2][1].astype(int) - learned.astype(int)).mean() > 5  # ... and shows its output


def test_training_checkpoint_with_resizer(tiny_crop, tmp_path):
    from lightfer.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = create_model("swinv2_student_64", resizer=dict(in_size=32))
    ckpt = save_checkpoint({"model": net.state_dict(), "model_name": "swinv2_student_64",
                            "model_kwargs": {"resizer": {"in_size": 32}},
                            "pretrained_cfg": net.pretrained_cfg.to_dict()}, tmp_path / "best.pt")
    out = tmp_path / "ck"
    assert main(["explain", str(tiny_crop), "--crops", "--model", str(ckpt), "--out", str(out)]) == 0
    rec = json.loads((out / "explain.json").read_text())
    assert rec["random_weights"] is False and "best.pt" in rec["weights"] and rec["layer"] == "backbone.stages.2"
    assert (out / "tiny_face0_resizer.png").is_file()
    out2 = tmp_path / "ck2"
    assert main(["explain", str(tiny_crop), "--crops", "--model", "swinv2_student_64", "--weights", str(ckpt),
                 "--out", str(out2)]) == 0
    a = json.loads((out2 / "explain.json").read_text())["inputs"][0]["faces"][0]["probs"]
    assert a == pytest.approx(rec["inputs"][0]["faces"][0]["probs"])  # same weights either way
    out3 = tmp_path / "ck3"
    assert main(["explain", str(tiny_crop), "--crops", "--weights", str(ckpt), "--out", str(out3)]) == 0
    assert json.loads((out3 / "explain.json").read_text())["model"] == "swinv2_student_64"  # named by the file
    assert main(["explain", str(tiny_crop), "--crops", "--model", "resnet18", "--weights", str(ckpt),
                 "--out", str(tmp_path / "bad")]) == 1  # a checkpoint of another model is refused


def test_bad_files_are_named_skipped_and_exit_1(tiny_crop, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "missing.png"
    out = tmp_path / "o"
    rc = main(["explain", str(bad), str(tiny_crop), str(missing), "--crops", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err and "2 failed" in err
    assert (out / "tiny_face0.png").is_file()  # the good file is still explained
    rec = json.loads((out / "explain.json").read_text())
    assert [bool(r["error"]) for r in rec["inputs"]] == [True, False, True]


def test_no_face_and_repeated_names(tiny_crop, tmp_path, capsys):
    blank = tmp_path / "a" / "x.png"
    blank.parent.mkdir()
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    other = tmp_path / "b" / "x.png"
    other.parent.mkdir()
    Image.open(tiny_crop).save(other)
    out = tmp_path / "o"
    assert main(["explain", str(blank), "--out", str(out)]) == 0  # no face is not an error
    assert "no face found" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["explain.json", "x_overview.png"]
    assert main(["explain", str(blank), str(other), "--crops", "--out", str(out)]) == 0
    assert (out / "x_face0.png").is_file() and (out / "x_2_face0.png").is_file()  # one stem, two inputs


def test_heat_overlay_colours_and_checks():
    img = np.zeros((20, 30, 3), np.uint8)
    cam = np.zeros((5, 5), np.float32)
    cam[0, 0] = 1.0
    out = heat_overlay(img, cam)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 2] and out[-1, -1, 2] > out[-1, -1, 0]  # jet: hot = red, cold = blue
    with pytest.raises(ValueError, match="RGB uint8"):
        heat_overlay(img[..., 0], cam)


def test_state_dict_weights(tiny_crop, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = create_model("shufflenet_v2_x0_5", input_size=112)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    out = tmp_path / "sd"
    assert main(["explain", str(tiny_crop), "--crops", "--model", "shufflenet_v2_x0_5", "--weights",
                 str(tmp_path / "w.safetensors"), "--out", str(out)]) == 0
    rec = json.loads((out / "explain.json").read_text())
    assert rec["random_weights"] is False and rec["weights"].startswith("weights from") and rec["layer"] == "stages.1"
    with torch.no_grad():
        want = torch.softmax(net.eval()(torch.from_numpy(Explainer(net).clf.prepare([_png(tiny_crop)]))), 1)[0]
    got = rec["inputs"][0]["faces"][0]["probs"]
    np.testing.assert_allclose([got[c] for c in net.pretrained_cfg.classes], want.numpy(), atol=1e-5)
    assert main(["explain", str(tiny_crop), "--crops", "--model", "resnet18", "--weights",
                 str(tmp_path / "w.safetensors"), "--out", str(out)]) == 1  # weights of another architecture
