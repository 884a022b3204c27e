"""FER2013 / FER+ readers on tiny self-made CSVs (incl. malformed ones), and on the real copies when present."""
from __future__ import annotations

import numpy as np
import pytest

from lightfer.data import LabelError, MalformedFileError, build_dataset, ferplus_labels
from lightfer.data.fer2013 import read_fer2013, read_ferplus
from lightfer.data.labels import FER2013_CLASSES, FERPLUS_CLASSES

from .synth import face_like, write_fer_csv, write_ferplus_csv


@pytest.fixture()
def fer_rows():
    usages = ["Training", "Training", "PublicTest", "PrivateTest", "Training", "PrivateTest"]
    return [(i % 7, face_like(i), u) for i, u in enumerate(usages)]


@pytest.mark.parametrize("gz", [False, True])
def test_fer2013_splits_pixels_and_labels(tmp_path, fer_rows, gz):
    path = write_fer_csv(tmp_path / ("f.csv.gz" if gz else "f.csv"), fer_rows, gz=gz)
    train = read_fer2013(path, "train")
    test = build_dataset(f"fer2013:{path}", "test")
    assert len(train) == 3 and len(test) == 2 and len(read_fer2013(path, "PublicTest")) == 1
    assert len(read_fer2013(path, "all")) == 6
    np.testing.assert_array_equal(train.images[2], fer_rows[4][1])  # exact pixels, row-major
    np.testing.assert_array_equal(test.labels, [3, 5])
    assert train.classes == FER2013_CLASSES and train.images.dtype == np.uint8
    assert test.ids == [f"{path.name}:5", f"{path.name}:7"]  # file:line of each sample
    x, y = test[1]
    assert x.shape == (1, 48, 48) and x.dtype.is_floating_point and y == 5
    assert abs(float(x.mean()) - fer_rows[5][1].mean() / 255) < 1e-5


def test_fer2013_concatenates_several_files(tmp_path, fer_rows):
    a = write_fer_csv(tmp_path / "a.csv", fer_rows)
    b = write_fer_csv(tmp_path / "b.csv", fer_rows[:2])
    ds = build_dataset(f"fer2013:{a},{b}", "train")
    assert len(ds) == 5 and ds.ids[-1] == "b.csv:3"


@pytest.mark.parametrize("bad, message", [
    ((1, "1 2 3", "Training"), r"f.csv:3: 3 pixels, expected 2304"),
    ((1, " ".join(["7"] * 2303 + ["x"]), "Training"), r"f.csv:3: pixels are not all integers"),
    ((1, " ".join(["7"] * 2303 + ["256"]), "Training"), r"f.csv:3: pixel values outside 0..255"),
    ((9, face_like(0), "Training"), r"f.csv:3: emotion 9 not in the FER2013 map"),
    (("happy", face_like(0), "Training"), r"f.csv:3: emotion 'happy' is not an integer"),
    ((1, face_like(0), "Validation"), r"f.csv:3: Usage 'Validation'"),
])
def test_fer2013_malformed_rows_name_file_and_line(tmp_path, bad, message):
    path = write_fer_csv(tmp_path / "f.csv", [(0, face_like(1), "Training"), bad])
    with pytest.raises((MalformedFileError, LabelError), match=message):
        read_fer2013(path, "all")


def test_fer2013_missing_file_column_and_short_row(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        build_dataset(f"fer2013:{tmp_path / 'nope.csv'}", "test")
    p = tmp_path / "h.csv"
    p.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(MalformedFileError, match=r"h.csv:1: .* lacks column 'pixels'"):
        read_fer2013(p, "all")
    p.write_text("emotion,pixels,Usage\n0,1 2\n")
    with pytest.raises(MalformedFileError, match=r"h.csv:2: 2 fields, expected 3"):
        read_fer2013(p, "all")
    with pytest.raises(ValueError, match="unknown FER2013 split"):
        read_fer2013(p, "dev")


def test_ferplus_vote_rules_known_answers():
    votes = np.array([
        [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],  # neutral wins
        [0, 0, 0, 0, 0, 0, 0, 0, 6, 4],  # unknown wins -> drop
        [0, 0, 0, 0, 0, 0, 0, 0, 3, 7],  # NF wins -> drop
        [0, 4, 4, 0, 0, 0, 0, 0, 2, 0],  # tie happy/surprise -> first column (happy)
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes -> drop
        [0, 0, 0, 0, 0, 0, 0, 5, 5, 0],  # contempt ties unknown -> emotion kept
        [3, 3, 2, 1, 1, 0, 0, 0, 0, 0],  # strict: 3 of 9 (single votes removed: 3,3,2) not > half
        [1, 1, 1, 1, 1, 5, 0, 0, 0, 0],  # strict: singles dropped, disgust 5/5 wins
    ])
    np.testing.assert_array_equal(ferplus_labels(votes, "majority"), [0, -1, -1, 1, -1, 7, 0, 5])
    np.testing.assert_array_equal(ferplus_labels(votes, "strict"), [0, -1, -1, -1, -1, -1, -1, 5])
    with pytest.raises(ValueError, match="vote rule"):
        ferplus_labels(votes, "plurality")


def test_ferplus_join_by_orig_row_with_gaps(tmp_path):
    # FER+ rows 0..4; the FER2013 file lacks row 1 (a gap) and row 3 has a blank FER+ name
    imgs = [face_like(10 + i) for i in range(5)]
    fer = write_fer_csv(tmp_path / "fer.csv", [(0, imgs[i], "Training") for i in (0, 2, 3, 4)], orig_rows=[0, 2, 3, 4])
    plus = write_ferplus_csv(tmp_path / "new.csv", [
        ("Training", "fer0.png", [0, 8, 0, 0, 0, 0, 0, 0, 2, 0]),
        ("Training", "fer1.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("Training", "fer2.png", [2, 0, 0, 0, 0, 0, 6, 2, 0, 0]),
        ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("Training", "fer4.png", [0, 0, 0, 0, 0, 0, 0, 0, 1, 9]),
    ])
    ds = build_dataset(f"ferplus:{fer},{plus}", "train", return_soft=True)
    assert ds.classes == FERPLUS_CLASSES
    assert len(ds) == 2  # row 3 blank, row 4 not-a-face
    np.testing.assert_array_equal(ds.images[0], imgs[0])
    np.testing.assert_array_equal(ds.images[1], imgs[2])  # orig_row 2, not file position 1
    np.testing.assert_array_equal(ds.labels, [1, 6])
    np.testing.assert_allclose(ds.soft_labels[1], [0.2, 0, 0, 0, 0, 0, 0.6, 0.2])
    np.testing.assert_allclose(ds.soft_labels.sum(1), 1.0)
    x, y, soft = ds[1]
    assert y == 6 and soft.shape == (8,)


def test_ferplus_mismatched_usage_or_row_is_an_error(tmp_path):
    fer = write_fer_csv(tmp_path / "fer.csv", [(0, face_like(0), "PrivateTest")], orig_rows=[0])
    plus = write_ferplus_csv(tmp_path / "new.csv", [("Training", "a.png", [9, 0, 0, 0, 0, 0, 0, 0, 1, 0])])
    with pytest.raises(MalformedFileError, match="not joined by row"):
        read_ferplus(fer, plus, "test")
    fer = write_fer_csv(tmp_path / "fer2.csv", [(0, face_like(0), "Training")], orig_rows=[7])
    with pytest.raises(MalformedFileError, match="orig_row 7 outside"):
        read_ferplus(fer, plus, "train")
    bad = tmp_path / "bad.csv"
    bad.write_text("Usage,Image name,neutral\nTraining,a.png,3\n")
    with pytest.raises(MalformedFileError, match="not the FER\\+ header"):
        read_ferplus(fer, bad, "train")


@pytest.mark.data
def test_real_fer2013_privatetest_counts(shared_data):
    d = shared_data / "fer2013"
    ds = build_dataset(f"fer2013:{d / 'fer2013.csv.gz'},{d / 'fer2013_unplaced_equalized.csv.gz'}", "test")
    # README: 3,573 PrivateTest rows with exact pixels + 16 unplaced = the canonical 3,589, per class
    assert len(ds) == 3589
    np.testing.assert_array_equal(ds.class_counts(), [491, 55, 528, 879, 594, 416, 626])
    exact = np.array([i.startswith("fer2013.csv.gz:") for i in ds.ids])
    assert exact.sum() == 3573 and exact[:3573].all()
    np.testing.assert_array_equal(np.bincount(ds.labels[exact], minlength=7), [489, 55, 527, 876, 588, 414, 624])


@pytest.mark.data
def test_real_ferplus_test_split(shared_data):
    ds = read_ferplus(shared_data / "fer2013" / "fer2013.csv.gz", shared_data / "ferplus" / "fer2013new.csv", "test")
    assert 3400 < len(ds) <= 3573 - 15  # 15 PrivateTest rows have no FER+ name
    assert ds.soft_labels is not None and np.allclose(ds.soft_labels.sum(1), 1, atol=1e-5)
    assert (ds.soft_labels.argmax(1) == ds.labels).mean() > 0.95  # argmax of votes (ties aside)
