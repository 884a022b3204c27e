"""Shipping a trained checkpoint: safetensors + JSON, registered by name, same outputs as the checkpoint."""
import json

import numpy as np
import pytest
import torch

from lightfer.models import create_model, list_models
from lightfer.models import shipped
from lightfer.train.checkpoint import load_model_from_checkpoint
from lightfer.train.config import config_from_dict
from lightfer.train.engine import main


def _tiny_run(out, seed: int = 1):
    cfg = config_from_dict({
        "epochs": 1, "batch_size": 32, "output_dir": str(out), "progress": False, "seed": seed,
        "model": {"name": "shufflenet_v2_x0_5", "input_size": 32},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
        "data": {"synthetic_size": 128, "synthetic_image": 32},
    })
    torch.manual_seed(0)
    main(cfg)
    return out / "best.pt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("run"))


def test_ship_register_and_load(checkpoint, tmp_path, monkeypatch):
    weights = shipped.ship_checkpoint(checkpoint, "tiny_shipped_test", description="test model",
                                      provenance={"command": "pytest"}, crop_mode="align", crop_margin=0.1,
                                      out_dir=tmp_path)
    meta = json.loads((tmp_path / "tiny_shipped_test.json").read_text())
    assert meta["architecture"] == "shufflenet_v2_x0_5" and meta["pretrained_cfg"]["input_size"] == 32
    assert meta["pretrained_cfg"]["crop_margin"] == 0.1 and len(meta["sha256"]) == 64
    shipped._register(tmp_path / "tiny_shipped_test.json")
    try:
        assert "tiny_shipped_test" in list_models(pretrained=True)
        model = create_model("tiny_shipped_test", pretrained=True)
        ref = load_model_from_checkpoint(checkpoint).eval()
        x = torch.randn(3, 1, 32, 32)
        with torch.no_grad():
            np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=1e-6)
        assert model.pretrained_cfg.crop_mode == "align" and model.pretrained_cfg.license == "MIT"
        # a tampered file is refused
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        with pytest.raises(RuntimeError, match="sha256"):
            create_model("tiny_shipped_test", pretrained=True)
    finally:
        shipped._REGISTRY.pop("tiny_shipped_test", None)


def test_shipped_flip_tta_is_served_by_both_backends(checkpoint, tmp_path, monkeypatch):
    """A model shipped with ``tta_flip`` is served as the mean of the crop's and the mirror's probabilities."""
    from lightfer.classifier import ExpressionClassifier, softmax

    monkeypatch.setenv("LIGHTFER_HOME", str(tmp_path / "home"))
    shipped.ship_checkpoint(checkpoint, "tiny_tta_test", description="test model", provenance={},
                            tta_flip=True, out_dir=tmp_path)
    shipped._register(tmp_path / "tiny_tta_test.json")
    try:
        assert create_model("tiny_tta_test", pretrained=True).pretrained_cfg.tta_flip
        # the 1-epoch weights are near-constant: serve a random linear model on raw pixels (it sees left
        # from right) with the shipped config
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 7)).eval()
        model.pretrained_cfg = create_model("tiny_tta_test").pretrained_cfg
        rng = np.random.default_rng(0)
        crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
        x = torch.from_numpy(ExpressionClassifier(model, backend="torch", tta_flip=False).prepare(crops))
        with torch.no_grad():
            want = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)).numpy() / 2
            plain = model(x).softmax(1).numpy()
        assert np.abs(want - plain).max() > 1e-4  # the mirror really changes this model's outputs
        for backend in ("torch", "onnx"):
            clf = ExpressionClassifier(model, backend=backend, batch_size=4)  # odd split: 2 crops + 2 mirrors
            assert clf.tta_flip
            np.testing.assert_allclose(clf.predict(crops), want, atol=1e-5)
            np.testing.assert_allclose(softmax(clf.logits(x.numpy())), want, atol=1e-5)
        off = ExpressionClassifier(model, backend="torch", tta_flip=False)
        np.testing.assert_allclose(off.predict(crops), plain, atol=1e-5)
    finally:
        shipped._REGISTRY.pop("tiny_tta_test", None)


def test_shipped_models_register_whatever_is_imported_first():
    """Importing ``lightfer.models.shipped`` before any architecture module still registers the package's models."""
    import subprocess
    import sys

    code = ("import lightfer.models.shipped as s, json; from lightfer.models import list_models; "
            "names = [json.loads(p.read_text())['name'] for p in s.WEIGHTS_DIR.glob('*.json')]; "
            "assert names and set(names) <= set(list_models(pretrained=True)), names")
    subprocess.run([sys.executable, "-c", code], check=True)


SHIPPED = sorted(p.stem for p in shipped.WEIGHTS_DIR.glob("*.json"))


def _meta(name: str) -> dict:
    """The shipped model's ``.json`` record."""
    return json.loads((shipped.WEIGHTS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads_and_documents_itself(name):
    """Each pair in ``lightfer/weights`` loads (sha256 checked), declares how it is served and how it was made."""
    meta = _meta(name)
    assert meta["name"] == name
    model = create_model(name, pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert cfg.license == "MIT" and cfg.crop_mode in ("align", "box") and len(cfg.classes) == cfg.num_classes
    prov = meta["provenance"]
    assert prov["command"].startswith("lightfer train configs/") and prov["eval"].startswith(f"lightfer eval {name}")
    assert {"data", "split", "limit", "correct"} <= set(prov["check"])  # see the reproduction test below
    x = torch.randn(2, cfg.in_chans, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = model(x).softmax(1)
    assert p.shape == (2, cfg.num_classes) and torch.isfinite(p).all()


CHECKS = [(n, key) for n in SHIPPED for key in ("check", "check_int8")
          if key in _meta(n)["provenance"]]


@pytest.mark.parametrize("name,key", CHECKS)
def test_shipped_model_reproduces_its_recorded_check(name, key, shared_data, tmp_path):
    """From the real dataset, as a user would (``lightfer prepare --model NAME --limit N``, ``lightfer eval NAME``):
    the number of correct predictions recorded in ``provenance.check`` when the model shipped. Guards the shipped
    numbers against drift in the detector, the alignment, the preprocessing or the weights.

    ``check`` is float32 and the same on every CPU: one image of slack for float differences. ``check_int8`` (a
    shipped int8 file) runs where ``precision="auto"`` would serve that file (a CPU with 8-bit dot products), or
    anywhere for a file with 7-bit weights (``reduce_range``: no saturation on AVX2), with 1% of slack: ONNX
    Runtime's int8 kernels round differently between CPUs (342 vs 339 of 500 measured on two VNNI machines), while
    a broken quantisation or calibration moves far more."""
    from lightfer.classifier import int8_file

    check = _meta(name)["provenance"][key]
    precision = check.get("precision", "fp32")
    if precision == "int8" and int8_file(create_model(name, pretrained=True)) is None:
        pytest.skip("precision='auto' does not serve this int8 file here (8-bit weights, no 8-bit dot products)")
    fer = shared_data / "fer2013" / "fer2013.csv.gz"
    spec = {"fer2013": f"fer2013:{fer}", "ferplus": f"ferplus:{fer},{shared_data / 'ferplus' / 'fer2013new.csv'}"}
    got = shipped.reproduction_check(name, spec[check["data"]], split=check["split"], limit=check["limit"],
                                     work_dir=tmp_path, precision=precision)
    assert got["limit"] == check["limit"] and got["precision"] == precision
    slack = 1 if precision == "fp32" else max(1, check["limit"] // 100)
    assert abs(got["correct"] - check["correct"]) <= slack, (got, check)


def test_ferplus_model_has_contempt_and_reads_a_smile():
    """The FER+ model predicts 8 classes (contempt included) and serves a real smiling face as happy."""
    from skimage import data as skimage_data

    import lightfer

    an = lightfer.Analyzer(model="shufflenet_v2_x0_5_ferplus")
    assert set(an.classes) == {"neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"}
    res = an(skimage_data.astronaut())
    assert len(res.faces) == 1 and res.faces[0].label == "happy" and res.faces[0].confidence > 0.5


def test_resizer_checkpoint_reloads_and_ships_with_its_backbone_size(tmp_path):
    """A Neural Resizer run (48 px in, backbone at 64 px): the checkpoint and the shipped pair rebuild the
    backbone at 64 px, not at the resizer's input side nor the architecture's default."""
    cfg = config_from_dict({
        "epochs": 1, "batch_size": 32, "output_dir": str(tmp_path / "run"), "progress": False, "seed": 1,
        "model": {"name": "shufflenet_v2_x0_5", "input_size": 64, "kwargs": {"resizer": {"in_size": 48, "filters": 4}}},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
        "data": {"synthetic_size": 64, "synthetic_image": 48},
    })
    torch.manual_seed(0)
    main(cfg)
    ckpt = tmp_path / "run" / "best.pt"
    ref = load_model_from_checkpoint(ckpt).eval()
    assert ref.resizer.out_size == 64 and ref.pretrained_cfg.input_size == 48
    shipped.ship_checkpoint(ckpt, "tiny_resizer_test", description="test", provenance={}, out_dir=tmp_path)
    assert json.loads((tmp_path / "tiny_resizer_test.json").read_text())["backbone_input_size"] == 64
    shipped._register(tmp_path / "tiny_resizer_test.json")
    try:
        model = create_model("tiny_resizer_test", pretrained=True)
        assert model.resizer.out_size == 64 and model.pretrained_cfg.input_size == 48
        x = torch.randn(2, 1, 48, 48)
        with torch.no_grad():
            np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=1e-6)
            assert ref.resizer(x).shape[-1] == 64
    finally:
        shipped._REGISTRY.pop("tiny_resizer_test", None)


def test_reproduction_check_agrees_with_the_analyzer(tmp_path, astronaut, portraits):
    """``reproduction_check`` (prepare + eval in fresh processes) on a tiny class-folder dataset counts the same
    correct labels as the in-process Analyzer on those photos: the two paths crop and classify alike."""
    from PIL import Image

    import lightfer
    from lightfer.defaults import DEFAULT_MODEL

    root = tmp_path / "photos"
    (root / "happy").mkdir(parents=True)
    (root / "neutral").mkdir()
    Image.fromarray(astronaut).save(root / "happy" / "astronaut.png")
    (root / "happy" / "trump.jpg").write_bytes(portraits["trump"].read_bytes())
    (root / "neutral" / "obama.jpg").write_bytes(portraits["obama"].read_bytes())
    got = shipped.reproduction_check(DEFAULT_MODEL, f"folder:{root}?split=all", split="all", limit=3,
                                     work_dir=tmp_path)
    analyzer = lightfer.Analyzer()
    want = sum(analyzer(p).faces[0].label == p.parent.name for p in sorted(root.glob("*/*")))
    assert want >= 2 and got["data"] == "folder" and got["limit"] == 3 and got["correct"] == want


def test_ship_an_ensemble_of_checkpoints(checkpoint, tmp_path, monkeypatch):
    """An ensemble ships as one pair of files, registers under its name and serves the mean of its members'
    probabilities in PyTorch and ONNX Runtime; members that take other crops are refused."""
    from lightfer.classifier import ExpressionClassifier

    monkeypatch.setenv("LIGHTFER_HOME", str(tmp_path / "home"))
    other = _tiny_run(tmp_path / "run2", seed=2)
    members = [str(checkpoint), f"{other}@live"]
    shipped.ship_ensemble(members, "tiny_ens_test", description="test ensemble", provenance={"command": "pytest"},
                          tta_flip=True, out_dir=tmp_path)
    meta = json.loads((tmp_path / "tiny_ens_test.json").read_text())
    assert meta["architecture"] == "ensemble" and meta["provenance"]["members"] == members
    assert [m["architecture"] for m in meta["arch_kwargs"]["members"]] == ["shufflenet_v2_x0_5"] * 2
    shipped._register(tmp_path / "tiny_ens_test.json")
    try:
        assert "tiny_ens_test" in list_models(pretrained=True) and "ensemble" not in list_models()
        model = create_model("tiny_ens_test", pretrained=True)
        assert model.pretrained_cfg.tta_flip and model.pretrained_cfg.input_size == 32
        first, second = load_model_from_checkpoint(checkpoint), load_model_from_checkpoint(other, use_ema=False)
        x = torch.randn(4, 1, 32, 32)
        with torch.no_grad():
            a, b = first(x).softmax(1), second(x).softmax(1)
            assert (a - b).abs().max() > 1e-4  # the two members really differ
            np.testing.assert_allclose(model(x).exp().numpy(), ((a + b) / 2).numpy(), atol=1e-5)
        rng = np.random.default_rng(0)
        crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
        torch_p = ExpressionClassifier(model, backend="torch").predict(crops)
        np.testing.assert_allclose(ExpressionClassifier(model, backend="onnx").predict(crops), torch_p, atol=1e-5)
        np.testing.assert_allclose(torch_p.sum(1), 1.0, atol=1e-5)
    finally:
        shipped._REGISTRY.pop("tiny_ens_test", None)
    with pytest.raises(ValueError, match="input_size"):  # the 64 px default cannot join 32 px members
        shipped.ship_ensemble([str(checkpoint), "shufflenet_v2_x0_5_fer2013"], "tiny_bad_ens", description="x",
                              provenance={}, out_dir=tmp_path)


def test_ensemble_of_shipped_models_is_stored_by_reference(tmp_path):
    """An ensemble of shipped models writes only a .json naming them; loading it takes each member's own weights
    (no weight stored twice) and serves the mean of their probabilities."""
    members = ["shufflenet_v2_x0_5_fer2013", "shufflenet_v2_x0_5_fer2013_robust"]
    path = shipped.ship_ensemble(members, "tiny_ref_ens_test", description="test", provenance={"command": "pytest"},
                                 tta_flip=True, out_dir=tmp_path)
    assert path.suffix == ".json" and not (tmp_path / "tiny_ref_ens_test.safetensors").exists()
    meta = json.loads(path.read_text())
    assert meta["member_models"] == members and meta["sha256"] is None
    shipped._register(path)
    try:
        model = create_model("tiny_ref_ens_test", pretrained=True).eval()
        a, b = (create_model(m, pretrained=True).eval() for m in members)
        x = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            np.testing.assert_allclose(model(x).exp().numpy(), ((a(x).softmax(1) + b(x).softmax(1)) / 2).numpy(),
                                       atol=1e-5)
        assert model.pretrained_cfg.tta_flip
    finally:
        shipped._REGISTRY.pop("tiny_ref_ens_test", None)



def test_ensemble_re_normalises_members_with_other_statistics(tmp_path):
    """Members trained with different mean / std (the 0.5 / 0.5 ShuffleNet and the dlib ResNet's 0.46 / 1.004) join
    one ensemble: the JSON stores an input affine for the second, and after a round trip through the registry each
    member sees the raw image normalised with its own statistics, in PyTorch and in ONNX Runtime."""
    from lightfer.classifier import ExpressionClassifier
    from lightfer.train.data import to_model_input

    members = ["shufflenet_v2_x0_5_fer2013", "dlib_resnet_face_fer2013"]
    path = shipped.ship_ensemble(members, "tiny_mixed_ens_test", description="test", provenance={"command": "pytest"},
                                 out_dir=tmp_path)
    meta = json.loads(path.read_text())
    specs = meta["arch_kwargs"]["members"]
    assert "input_affine" not in specs[0] and len(specs[1]["input_affine"]["scale"]) == 1
    shipped._register(path)
    try:
        model = create_model("tiny_mixed_ens_test", pretrained=True).eval()
        a, b = (create_model(m, pretrained=True).eval() for m in members)
        assert tuple(model.pretrained_cfg.mean) == tuple(a.pretrained_cfg.mean) != tuple(b.pretrained_cfg.mean)
        raw = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        prep = {m: to_model_input(raw, 64, 1, m.pretrained_cfg.mean, m.pretrained_cfg.std) for m in (model, a, b)}
        with torch.no_grad():
            want = (a(prep[a]).softmax(1) + b(prep[b]).softmax(1)) / 2
            np.testing.assert_allclose(model(prep[model]).exp().numpy(), want.numpy(), atol=1e-5)
            wrong = (a(prep[a]).softmax(1) + b(prep[a]).softmax(1)) / 2  # the dlib member fed the 0.5 / 0.5 input
            assert (wrong - want).abs().max() > 1e-3
        rng = np.random.default_rng(1)
        crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
        np.testing.assert_allclose(ExpressionClassifier(model, backend="onnx").predict(crops),
                                   ExpressionClassifier(model, backend="torch").predict(crops), atol=1e-4)
    finally:
        shipped._REGISTRY.pop("tiny_mixed_ens_test", None)


def test_renormalize_affine():
    """The affine maps one normalisation onto another exactly; equal statistics (to 1e-9) need none."""
    from lightfer.models.ensemble import renormalize_affine

    assert renormalize_affine([0.46], [1.0], [0.46 + 1e-12], [1.0]) is None
    scale, shift = renormalize_affine([0.5], [0.5], [0.46], [1.004])
    r = torch.rand(100)
    np.testing.assert_allclose(((r - 0.5) / 0.5 * scale[0] + shift[0]).numpy(), ((r - 0.46) / 1.004).numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="channel"):
        renormalize_affine([0.5], [0.5], [0.4, 0.4, 0.4], [1.0, 1.0, 1.0])


def test_a_retired_model_is_named_with_its_successor_and_how_to_restore_it(tmp_path):
    """Retired shipped models left the package: asking for one by name (registry, training start weights, service)
    says so, names the successor and the git command that restores the files; every successor is shipped."""
    from lightfer.service.engine import ServiceError
    from lightfer.train.builders import init_weights

    assert shipped.RETIRED and set(shipped.RETIRED.values()) <= set(list_models(pretrained=True))
    name = "shufflenet_v2_x0_5_fer2013_ban"
    assert name in shipped.RETIRED and name not in list_models()
    with pytest.raises(KeyError, match=rf"retired.*shufflenet_v2_x0_5_fer2013'.*git checkout {shipped.RETIRED_AT}"):
        create_model(name, pretrained=True)
    with pytest.raises(ValueError, match="init_checkpoint: .*retired"):
        init_weights(create_model("shufflenet_v2_x0_5", input_size=64), name, ("angry",) * 7)
    with pytest.raises(KeyError, match="unknown model 'no_such_model'"):
        create_model("no_such_model")
    from lightfer.service.engine import ModelCache

    with pytest.raises(ServiceError, match="retired") as e:
        ModelCache(factory=lambda n: None, available=lambda: ["shufflenet_v2_x0_5_fer2013"]).check(name)
    assert e.value.status == 404
