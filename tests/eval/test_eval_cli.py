"""`lightfer eval` on registered models, training checkpoints and --weights; errors; the real FER2013 test split."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightfer.cli import main
from lightfer.data import FERDataset, build_dataset
from lightfer.eval.evaluate import evaluate_classifier, load_classifier, predict_probs

from ..data.synth import write_png


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for k, cls in enumerate(["anger", "happy", "sad", "contempt"]):
        for i in range(3):
            write_png(root / cls / f"{i}.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def test_eval_registered_model_writes_report_and_png(folder, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{folder}", "--split", "all", "--out", str(out),
               "--no-latency"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "UAR" in text and "confusion matrix" in text
    r = json.loads((out / "report.json").read_text())
    assert r["dataset_size"] == 12 and r["evaluated"] == 9 and r["dropped"] == 3  # contempt not in the model
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 9
    np.testing.assert_array_equal(cm.sum(1), [3, 0, 0, 3, 3, 0, 0])  # rows in the model's class order
    assert r["accuracy"] == pytest.approx(np.trace(cm) / 9)
    wd = r["with_dropped"]  # the whole split, contempt counted as misses
    assert wd["num_samples"] == 12 and wd["num_classes"] == 4 and wd["dropped_classes"] == {"contempt": 3}
    assert wd["accuracy"] == pytest.approx(np.trace(cm) / 12)
    recalls = [cm[i, i] / 3 for i in (0, 3, 4)]
    assert wd["uar"] == pytest.approx(sum(recalls) / 4)
    assert "counted as errors" in text
    assert r["cost"]["params"] > 50_000 and r["cost"]["flops"] > 1e6 and r["cost"]["latency_ms"] is None
    assert (out / "confusion.png").stat().st_size > 5000


def test_checkpoint_and_weights_give_the_same_predictions(tmp_path):
    from safetensors.torch import save_file

    from lightfer.train.checkpoint import save_checkpoint

    ref = load_classifier("fer_mini_xception")
    with torch.no_grad():  # perturb so a silently re-loaded pretrained model would differ
        for p in ref.parameters():
            p.add_(0.01 * torch.randn_like(p))
    cfg = ref.pretrained_cfg
    save_checkpoint({"model_name": "fer_mini_xception", "model": ref.state_dict(), "epoch": 3,
                     "pretrained_cfg": {"classes": list(cfg.classes), "in_chans": cfg.in_chans,
                                        "input_size": cfg.input_size, "mean": list(cfg.mean), "std": list(cfg.std)}},
                    tmp_path / "ckpt.pt")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    imgs = np.random.default_rng(2).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    want = predict_probs(ref.eval(), imgs)
    np.testing.assert_allclose(predict_probs(load_classifier(str(tmp_path / "ckpt.pt")), imgs), want, atol=1e-5)
    np.testing.assert_allclose(predict_probs(load_classifier("fer_mini_xception", str(tmp_path / "w.safetensors")),
                                             imgs), want, atol=1e-5)
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="do not fit fer_mini_xception"):
        load_classifier("fer_mini_xception", str(tmp_path / "bad.safetensors"))


def test_flip_tta_is_a_no_op_on_mirror_symmetric_faces():
    model = load_classifier("fer_mini_xception")
    half = np.random.default_rng(4).integers(0, 256, (6, 64, 32), dtype=np.uint8)
    sym = np.concatenate([half, half[:, :, ::-1]], axis=2)
    ds = FERDataset(images=sym, labels=np.arange(6), classes=model.pretrained_cfg.classes, name="sym")
    a = evaluate_classifier(model, ds, latency=False)
    b = evaluate_classifier(model, ds, latency=False, tta_flip=True)
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["auc_macro"] == pytest.approx(b["auc_macro"])
    asym = np.random.default_rng(5).integers(0, 256, (6, 64, 64), dtype=np.uint8)
    pa, pb = predict_probs(model, asym), predict_probs(model, asym, tta_flip=True)
    assert np.abs(pa - pb).max() > 1e-4  # and it does something on asymmetric ones


def test_eval_errors(folder, capsys):
    assert main(["eval", "no_such_model", "--data", f"folder:{folder}", "--split", "all"]) == 1
    assert "neither a file nor a registered model" in capsys.readouterr().err
    assert main(["eval", "fer_mini_xception", "--data", f"folder:{folder / 'nope'}", "--split", "all"]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["eval", "--data", f"folder:{folder}"]) == 2
    assert main(["eval", "--detector", "--data", f"folder:{folder}"]) == 2
    assert "needs --data wider:DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "fer_mini_xception", "--data", "x", "--bogus"])


@pytest.mark.data
def test_real_fer2013_test_split_baseline(shared_data, capsys):
    rc = main(["eval", "fer_mini_xception", "--data", f"fer2013:{shared_data / 'fer2013' / 'fer2013.csv.gz'}",
               "--split", "test", "--limit", "600", "--no-latency", "--json", "-"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["evaluated"] == 600 and 0.55 < r["accuracy"] < 0.80 and 0.45 < r["uar"] < r["accuracy"] + 0.1


def test_several_splits_in_one_run(tmp_path, capsys):
    rng = np.random.default_rng(7)
    for split, n in (("train", 2), ("test", 3)):
        for cls in ("happy", "sad"):
            for i in range(n):
                write_png(tmp_path / "d" / split / cls / f"{i}.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{tmp_path / 'd'}", "--split", "train,test",
               "--out", str(tmp_path / "o"), "--no-latency"])
    assert rc == 0 and capsys.readouterr().out.count("confusion matrix") == 2
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["splits"]["train"]["evaluated"] == 4 and r["splits"]["test"]["evaluated"] == 6
    assert (tmp_path / "o" / "confusion_train.png").exists() and (tmp_path / "o" / "confusion_test.png").exists()


def test_compare_two_models_paired(folder, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(["eval", "shufflenet_v2_x0_5_fer2013", "--compare", "fer_mini_xception", "--data", f"folder:{folder}",
               "--split", "all", "--no-latency", "--no-tta", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "paired vs fer_mini_xception" in text and "McNemar" in text
    r = json.loads(out.read_text())
    pc = r["compare"]
    assert pc["num_samples"] == r["evaluated"] == 9  # the contempt images are dropped from both
    assert pc["accuracy_a"] == pytest.approx(r["accuracy"])
    assert pc["only_a"] - pc["only_b"] == pytest.approx(pc["diff"] * 9)
    assert pc["tta_a"] is False and pc["tta_b"] is False and 0.0 < pc["p_mcnemar"] <= 1.0
    # a model compared with itself agrees on every sample
    rc = main(["eval", "fer_mini_xception", "--compare", "fer_mini_xception", "--data", f"folder:{folder}",
               "--split", "all", "--no-latency", "--json", str(out)])
    pc = json.loads(out.read_text())["compare"]
    assert rc == 0 and pc["only_a"] == pc["only_b"] == 0 and pc["p_mcnemar"] == 1.0


def test_compare_tta_sets_the_second_models_tta_alone(folder, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(["eval", "fer_mini_xception", "--no-tta", "--compare", "fer_mini_xception", "--compare-tta",
               "--data", f"folder:{folder}", "--split", "all", "--no-latency", "--json", str(out)])
    assert rc == 0
    pc = json.loads(out.read_text())["compare"]
    assert pc["tta_a"] is False and pc["tta_b"] is True
    # B with TTA scores what the same model scores alone with TTA
    model = load_classifier("fer_mini_xception")
    alone = evaluate_classifier(model, build_dataset(f"folder:{folder}", None), latency=False, tta_flip=True)
    assert pc["accuracy_b"] == pytest.approx(alone["accuracy"])
    rc = main(["eval", "fer_mini_xception", "--tta", "--compare", "fer_mini_xception", "--compare-no-tta",
               "--data", f"folder:{folder}", "--split", "all", "--no-latency", "--json", str(out)])
    pc = json.loads(out.read_text())["compare"]
    assert rc == 0 and pc["tta_a"] is True and pc["tta_b"] is False
    rc = main(["eval", "fer_mini_xception", "--compare-tta", "--data", f"folder:{folder}"])
    assert rc == 2 and "--compare-tta / --compare-no-tta needs --compare" in capsys.readouterr().err


def test_compare_refuses_models_with_different_classes(folder, capsys):
    rc = main(["eval", "shufflenet_v2_x0_5_fer2013", "--compare", "shufflenet_v2_x0_5_ferplus", "--data",
               f"folder:{folder}", "--split", "all", "--no-latency"])
    assert rc == 1 and "different classes" in capsys.readouterr().err


def _mirror_folder(src, dst, size):
    """The same class/file tree as ``src`` with every image resized to ``size`` (another crop set)."""
    from PIL import Image

    for f in sorted(src.rglob("*.png")):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).resize((size, size), Image.BILINEAR).save(out)
    return dst


def test_compare_data_gives_model_b_its_own_crops(folder, tmp_path, capsys):
    big = _mirror_folder(folder, tmp_path / "big", 64)
    out = tmp_path / "cmp.json"
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{folder}", "--compare", "fer_mini_xception",
               "--compare-data", f"folder:{big}", "--split", "all", "--no-latency", "--no-tta", "--json", str(out)])
    assert rc == 0
    assert f"read its crops of the same samples from folder:{big}" in capsys.readouterr().out
    pc = json.loads(out.read_text())["compare"]
    assert pc["num_samples"] == 9 and pc["data_b"] == f"folder:{big}"
    # model B's accuracy is the one it gets on its own crops
    model = load_classifier("fer_mini_xception")
    r_big = evaluate_classifier(model, build_dataset(f"folder:{big}", None), latency=False)
    assert pc["accuracy_b"] == pytest.approx(r_big["accuracy"])


def test_compare_data_refuses_other_samples(folder, tmp_path, capsys):
    other = _mirror_folder(folder, tmp_path / "other", 48)
    (other / "sad" / "0.png").rename(other / "sad" / "9.png")  # a different sample in the same place
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{folder}", "--compare", "fer_mini_xception",
               "--compare-data", f"folder:{other}", "--split", "all", "--no-latency"])
    assert rc == 1 and "not the same samples" in capsys.readouterr().err
    (other / "sad" / "9.png").unlink()  # one sample fewer
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{folder}", "--compare", "fer_mini_xception",
               "--compare-data", f"folder:{other}", "--split", "all", "--no-latency"])
    assert rc == 1 and "11 samples" in capsys.readouterr().err
    rc = main(["eval", "fer_mini_xception", "--data", f"folder:{folder}", "--compare-data", f"folder:{other}"])
    assert rc == 2 and "--compare-data needs --compare" in capsys.readouterr().err


def test_no_ema_scores_the_live_weights_of_a_checkpoint(folder, tmp_path, capsys):
    from lightfer.train.checkpoint import save_checkpoint

    live = load_classifier("fer_mini_xception")
    ema = load_classifier("fer_mini_xception")
    with torch.no_grad():  # two different weight sets in one checkpoint
        for p in ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = live.pretrained_cfg
    ckpt = save_checkpoint({"model_name": "fer_mini_xception", "model": live.state_dict(), "ema": ema.state_dict(),
                            "epoch": 1, "pretrained_cfg": {"classes": list(cfg.classes), "in_chans": cfg.in_chans,
                                                           "input_size": cfg.input_size}}, tmp_path / "c.pt")
    imgs = np.random.default_rng(5).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(predict_probs(load_classifier(str(ckpt)), imgs), predict_probs(ema, imgs), atol=1e-5)
    np.testing.assert_allclose(predict_probs(load_classifier(str(ckpt), use_ema=False), imgs),
                               predict_probs(live, imgs), atol=1e-5)
    out = tmp_path / "r.json"
    assert main(["eval", str(ckpt), "--no-ema", "--compare", "fer_mini_xception", "--data", f"folder:{folder}",
                 "--split", "all", "--no-latency", "--json", str(out)]) == 0
    pc = json.loads(out.read_text())["compare"]
    assert pc["only_a"] == pc["only_b"] == 0  # the live weights are the shipped baseline's
