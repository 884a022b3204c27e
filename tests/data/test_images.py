"""Image-file readers (class folders, RAF-DB, AffectNet, CK+) on tiny self-made trees, incl. broken ones."""
from __future__ import annotations

import numpy as np
import pytest

from lightfer.data import LabelError, MalformedFileError, build_dataset
from lightfer.data.images import read_affectnet, read_ckplus, read_folder, read_rafdb

from .synth import write_png


def rgb(value: int, side: int = 40, h: int | None = None) -> np.ndarray:
    img = np.zeros((h or side, side, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = 255 - value
    return img


def test_folder_synonyms_splits_and_resize(tmp_path):
    write_png(tmp_path / "train" / "Happiness" / "a.png", rgb(10))
    write_png(tmp_path / "train" / "anger" / "b.png", rgb(20, 60, 30))  # other size, non-square -> resized
    write_png(tmp_path / "train" / "anger" / "c.jpg", rgb(30))
    (tmp_path / "train" / "anger" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "test" / "surprised" / "d.png", rgb(40))
    ds = build_dataset(f"folder:{tmp_path}?size=32", "train")
    assert ds.classes == ("angry", "happy", "surprise")  # canonical names and order, union over splits
    assert ds.images.shape == (3, 32, 32, 3) and ds.channels == 3
    np.testing.assert_array_equal(ds.labels, [0, 0, 1])
    assert ds.images[2, 5, 5, 0] == 10 and ds.images[2, 5, 5, 1] == 245  # RGB order kept
    test = build_dataset(f"folder:{tmp_path}", "test")
    assert test.classes == ("angry", "happy", "surprise") and test.images.shape == (1, 40, 40, 3)
    assert ds.classes == ("angry", "happy", "surprise")  # one label index shared by all splits
    assert test.labels.tolist() == [2]
    gray = build_dataset(f"folder:{tmp_path}?gray=1&size=16", "train")
    assert gray.images.shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="no folder for split 'val'"):
        build_dataset(f"folder:{tmp_path}", "val")


def test_folder_errors_unknown_class_and_empty(tmp_path):
    write_png(tmp_path / "bored" / "a.png", rgb(1))
    with pytest.raises(LabelError, match=r"bored: unknown class name 'bored'"):
        read_folder(tmp_path, "all")
    (tmp_path / "bored" / "a.png").unlink()
    (tmp_path / "bored").rmdir()
    (tmp_path / "happy").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        read_folder(tmp_path, "all")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_folder(tmp_path / "missing", "all")


def test_folder_numeric_classes_need_a_label_map(tmp_path):
    write_png(tmp_path / "train" / "1" / "a.png", rgb(5))
    write_png(tmp_path / "train" / "6" / "b.png", rgb(6))
    ds = build_dataset(f"folder:{tmp_path}?labels=rafdb", "train")  # Kaggle RAF-DB layout: 1 surprise, 6 anger
    assert ds.classes == ("angry", "surprise")
    assert [ds.classes[y] for y in ds.labels] == ["surprise", "angry"]
    write_png(tmp_path / "test" / "4" / "d.png", rgb(8))
    assert build_dataset(f"folder:{tmp_path}?labels=rafdb", "train").classes == ("angry", "happy", "surprise")
    with pytest.raises(LabelError, match=r"unknown class name '\d'"):
        build_dataset(f"folder:{tmp_path}", "train")
    write_png(tmp_path / "train" / "9" / "c.png", rgb(7))
    with pytest.raises(LabelError, match=r"label 9 not in the rafdb map"):
        build_dataset(f"folder:{tmp_path}?labels=rafdb", "train")


def test_rafdb_list_and_aligned_images(tmp_path):
    lines = ["train_00001.jpg 1", "train_00002.jpg 4", "test_0001.jpg 7", ""]
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines))
    for i, name in enumerate(["train_00001", "train_00002", "test_0001"]):
        write_png(tmp_path / "Image" / "aligned" / f"{name}_aligned.jpg", rgb(50 * i, 100))
    train = build_dataset(f"rafdb:{tmp_path}", "train")
    assert [train.classes[y] for y in train.labels] == ["surprise", "happy"]
    test = read_rafdb(tmp_path, "test")
    assert test.classes == train.classes and len(test.classes) == 7 and test.images.shape == (1, 100, 100, 3)
    assert test.classes[test.labels[0]] == "neutral"
    with pytest.raises(ValueError, match="RAF-DB has splits train and test"):
        read_rafdb(tmp_path, "val")
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg one\n")
    with pytest.raises(MalformedFileError, match=r"list_patition_label.txt:1: expected"):
        read_rafdb(tmp_path, "train")
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00009.jpg 2\n")
    with pytest.raises(FileNotFoundError, match=r"list_patition_label.txt:1: image for train_00009.jpg"):
        read_rafdb(tmp_path, "train")


def test_affectnet_csv_crops_face_box_and_drops_non_faces(tmp_path):
    img = np.zeros((80, 80, 3), np.uint8)
    img[20:60, 10:50] = 200  # the "face" box region is bright
    write_png(tmp_path / "Manually_Annotated_Images" / "1" / "a.png", img)
    write_png(tmp_path / "Manually_Annotated_Images" / "1" / "b.png", img)
    write_png(tmp_path / "Manually_Annotated_Images" / "1" / "c.png", img)
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    (tmp_path / "training.csv").write_text(head + "1/a.png,10,20,40,40,,1,0.5,0.1\n1/b.png,10,20,40,40,,7,0,0\n"
                                           "1/c.png,10,20,40,40,,10,0,0\n")
    ds = build_dataset(f"affectnet:{tmp_path}?size=24", "train")
    assert len(ds) == 2 and ds.num_classes == 8  # code 10 (no face) dropped; AffectNet-8 label set
    assert [ds.classes[y] for y in ds.labels] == ["happy", "contempt"]
    assert ds.images.min() >= 190  # only the bright face box was kept
    seven = read_affectnet(tmp_path, "train", classes=7)
    assert len(seven) == 1 and seven.num_classes == 7 and "contempt" not in seven.classes
    (tmp_path / "training.csv").write_text(head + "1/a.png,10,20,40,40,,happy,0,0\n")
    with pytest.raises(MalformedFileError, match=r"training.csv:2: expression 'happy'"):
        read_affectnet(tmp_path, "train")


def test_affectnet_class_folders(tmp_path):
    write_png(tmp_path / "val" / "0" / "a.png", rgb(1))
    write_png(tmp_path / "val" / "7" / "b.png", rgb(2))
    ds = build_dataset(f"affectnet:{tmp_path}", "val")
    assert [ds.classes[y] for y in ds.labels] == ["neutral", "contempt"]


def test_ckplus_official_layout_peak_frames(tmp_path):
    seq = tmp_path / "cohn-kanade-images" / "S005" / "001"
    for k in range(5):
        write_png(seq / f"S005_001_{k:08d}.png", rgb(10 * k, 48))
    emo = tmp_path / "Emotion" / "S005" / "001"
    emo.mkdir(parents=True)
    (emo / "S005_001_00000004_emotion.txt").write_text("   3.0000000e+00\n")
    ds = read_ckplus(tmp_path, peak=2, neutral=True)
    assert [ds.classes[y] for y in ds.labels] == ["disgust", "disgust", "neutral"]
    assert ds.images[2, 0, 0, 0] == 0 and ds.images[1, 0, 0, 0] == 40  # first frame = neutral, last = peak
    assert len(build_dataset(f"ckplus:{tmp_path}?peak=1")) == 1
    (emo / "S005_001_00000004_emotion.txt").write_text("9\n")
    with pytest.raises(LabelError, match="label 9 not in the ckplus map"):
        read_ckplus(tmp_path)
