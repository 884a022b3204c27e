"""Dataset specs, label remapping, hybrid merging and class balancing, transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lightfer.data import (FERDataset, LabelError, balance_by_augmentation, balanced_sampler, build_dataset,
                           merge_datasets, parse_spec)
from lightfer.data.labels import CANONICAL_CLASSES, canonical_name, remap_indices
from lightfer.data.transforms import crops_to_input, train_transform

from .synth import face_like, write_fer_csv, write_png


def test_parse_spec_forms_and_errors():
    d = parse_spec("ferplus:/a/fer.csv.gz,/b/new.csv?vote=strict&size=64")
    assert d == {"kind": "ferplus", "paths": ["/a/fer.csv.gz", "/b/new.csv"], "vote": "strict", "size": 64}
    h = parse_spec("fer2013:/a.csv+folder:/ck?split=all")
    assert h["kind"] == "hybrid" and [p["kind"] for p in h["parts"]] == ["fer2013", "folder"]
    assert parse_spec({"kind": "folder", "path": "/x", "gray": "1"})["gray"] is True
    assert parse_spec("folder:/data/CK+48?split=all")["paths"] == ["/data/CK+48"]  # '+' inside a path
    h = parse_spec("folder:/data/CK+48+ckplus:/a+b")
    assert [p["paths"] for p in h["parts"]] == [["/data/CK+48"], ["/a+b"]]
    for bad, msg in [("/just/a/path", "needs KIND:PATH"), ("mnist:/x", "unknown kind 'mnist'"),
                     ("folder:/x?colour=1", "unknown option 'colour'"), ("folder:/x?size=big", "not an integer"),
                     ("ferplus:/only/one.csv", "takes 2 path"), ("folder:", "no path"), ("folder:/x?size", "key=value")]:
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)


def test_canonical_names_and_remap():
    assert canonical_name("Happiness") == "happy" and canonical_name(" ANGER ") == "angry"
    with pytest.raises(LabelError, match="unknown class name 'bored'"):
        canonical_name("bored")
    np.testing.assert_array_equal(remap_indices(["neutral", "happiness", "contempt"], CANONICAL_CLASSES[:7]), [6, 3, -1])


def _toy(classes, labels, side=8, value=0, soft=False) -> FERDataset:
    n = len(labels)
    s = None
    if soft:
        s = np.eye(len(classes), dtype=np.float32)[labels]
    return FERDataset(images=np.full((n, side, side), value, np.uint8), labels=np.array(labels), classes=classes,
                      soft_labels=s, name="toy")


def test_remap_reorders_drops_or_raises():
    ds = _toy(("neutral", "happy", "contempt"), [0, 1, 2, 1], soft=True)
    out = ds.remap(CANONICAL_CLASSES[:7], drop_missing=True)
    assert len(out) == 3 and [out.classes[y] for y in out.labels] == ["neutral", "happy", "happy"]
    assert out.soft_labels.shape == (3, 7) and out.soft_labels[0, 6] == 1
    with pytest.raises(LabelError, match=r"\['contempt'\] are not in the target"):
        ds.remap(CANONICAL_CLASSES[:7])
    ds.meta.update(face_found=np.array([True, False, True, False]), note="kept")
    out = ds.remap(CANONICAL_CLASSES[:7], drop_missing=True)
    assert out.meta["face_found"].tolist() == [True, False, False] and out.meta["note"] == "kept"
    assert ds.subset([3, 0]).meta["face_found"].tolist() == [False, True]


def test_dataset_validation_errors():
    with pytest.raises(ValueError, match="uint8"):
        FERDataset(images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2), classes=("happy",))
    with pytest.raises(LabelError, match="labels outside"):
        FERDataset(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 3]), classes=("happy", "sad"))
    with pytest.raises(ValueError, match="return_soft needs soft labels"):
        FERDataset(images=np.zeros((1, 4, 4), np.uint8), labels=np.array([0]), classes=("happy",), return_soft=True)


def test_hybrid_merges_label_spaces_and_formats(tmp_path):
    fer = write_fer_csv(tmp_path / "fer.csv", [(3, face_like(1, value=100), "Training"),
                                               (1, face_like(2, value=50), "Training")])
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    write_png(tmp_path / "ck" / "contempt" / "a.png", rgb)
    write_png(tmp_path / "ck" / "happiness" / "b.png", rgb)
    ds = build_dataset(f"fer2013:{fer}+folder:{tmp_path / 'ck'}?split=all", "train")
    assert ds.classes == CANONICAL_CLASSES  # union of FER2013's 7 and contempt, canonical order
    assert ds.images.shape == (4, 64, 64, 3)  # largest size, RGB because one part is RGB
    assert [ds.classes[y] for y in ds.labels] == ["happy", "disgust", "contempt", "happy"]
    assert ds.images[0, 10, 10].tolist() == [100, 100, 100]  # gray replicated into RGB, resized
    np.testing.assert_array_equal(ds.meta["source"], [0, 0, 1, 1])
    seven = build_dataset(f"fer2013:{fer}+folder:{tmp_path / 'ck'}?split=all", "train",
                          classes=CANONICAL_CLASSES[:7], drop_missing=True)
    assert len(seven) == 3 and seven.num_classes == 7
    gray = merge_datasets([build_dataset(f"fer2013:{fer}", "train")] * 2)
    assert gray.images.shape == (4, 48, 48)


def test_balanced_sampler_equalises_classes():
    ds = _toy(("angry", "disgust", "happy"), [0] * 90 + [1] * 10 + [2] * 300)
    idx = np.array(list(balanced_sampler(ds, num_samples=30000, seed=1)))
    frac = np.bincount(ds.labels[idx], minlength=3) / len(idx)
    np.testing.assert_allclose(frac, 1 / 3, atol=0.02)
    again = np.array(list(balanced_sampler(ds, num_samples=50, seed=1)))
    np.testing.assert_array_equal(again, np.array(list(balanced_sampler(ds, num_samples=50, seed=1))))


def test_balance_by_augmentation_tops_up_minorities():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (13, 16, 16), dtype=np.uint8)
    ds = FERDataset(images=imgs, labels=np.array([0] * 10 + [1] * 3), classes=("angry", "disgust"), name="t")
    out = balance_by_augmentation(ds, seed=0)
    np.testing.assert_array_equal(out.class_counts(), [10, 10])
    np.testing.assert_array_equal(out.images[:13], imgs)  # originals kept first
    assert all(i.endswith("~aug") for i in out.ids[13:])
    np.testing.assert_array_equal(out.labels[13:], 1)
    assert sum(not any(np.array_equal(out.images[k], imgs[j]) for j in range(13)) for k in range(13, 20)) >= 4
    assert balance_by_augmentation(out) is out  # already balanced: unchanged


def test_crops_to_input_matches_serving_preprocessing():
    from lightfer.classifier import ExpressionClassifier
    from lightfer.models import create_model

    model = create_model("fer_mini_xception")
    clf = ExpressionClassifier(model, backend="torch")
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, -1)
    np.testing.assert_allclose(crops_to_input(gray, model.pretrained_cfg), clf.prepare(list(rgb)), atol=1e-6)
    big = rng.integers(0, 256, (2, 100, 100, 3), dtype=np.uint8)
    np.testing.assert_allclose(crops_to_input(big, model.pretrained_cfg), clf.prepare(list(big)), atol=1e-6)
    t = train_transform(model.pretrained_cfg, np.random.default_rng(0))(gray[0])
    assert isinstance(t, torch.Tensor) and t.shape == (1, 64, 64) and -1.0 <= float(t.min()) and float(t.max()) <= 1.0


def test_dict_spec_as_the_trainer_passes_it(tmp_path):
    fer = write_fer_csv(tmp_path / "fer.csv", [(0, face_like(1), "Training"), (4, face_like(2), "PublicTest")])
    ds = build_dataset({"kind": "fer2013", "path": str(fer), "split": "val"})
    assert len(ds) == 1 and ds.labels.tolist() == [4]
    assert len(build_dataset({"kind": "fer2013", "path": [str(fer)]}, "train")) == 1
    with pytest.raises(ValueError, match="options \\['vote'\\] do not apply"):
        build_dataset({"kind": "fer2013", "path": str(fer), "vote": "strict"}, "train")
    with pytest.raises(ValueError, match="rafdb: options \\['labels'\\] do not apply"):
        build_dataset(f"rafdb:{tmp_path}?labels=ckplus", "train")
