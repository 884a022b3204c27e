"""scripts/vote_targets.py on a tiny self-made FER2013 + FER+ pair whose rows are joined through orig_row."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.synth import face_like, write_fer_csv, write_ferplus_csv

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "scripts" / "vote_targets.py")]
# FER+ vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF


def _files(tmp_path: Path) -> tuple[Path, Path]:
    """Four Training rows stored out of order (orig_row 3, 0, 2, 1) and one PrivateTest row (orig_row 4)."""
    fer = write_fer_csv(tmp_path / "fer.csv", [(0, face_like(0), "Training"), (3, face_like(1), "Training"),
                                               (6, face_like(2), "Training"), (4, face_like(3), "Training"),
                                               (5, face_like(4), "PrivateTest")], orig_rows=[3, 0, 2, 1, 4])
    plus = write_ferplus_csv(tmp_path / "fer2013new.csv", [
        ("Training", "fer0.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),  # orig 0: all happy
        ("Training", "fer1.png", [2, 0, 0, 6, 0, 0, 0, 0, 2, 0]),   # orig 1: sad 6, neutral 2 (+2 unknown dropped)
        ("Training", "fer2.png", [0, 0, 0, 0, 0, 0, 0, 3, 5, 2]),   # orig 2: contempt / unknown / NF only
        ("Training", "fer3.png", [4, 0, 0, 0, 3, 2, 0, 1, 0, 0]),   # orig 3: neutral 4, anger 3, disgust 2
        ("PrivateTest", "fer4.png", [0, 0, 9, 0, 0, 0, 1, 0, 0, 0]),
    ])
    return fer, plus


def test_votes_are_joined_by_orig_row_and_written_as_log_targets(tmp_path: Path) -> None:
    fer, plus = _files(tmp_path)
    out = tmp_path / "votes.pt"
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{fer}", "--split", "train", "--fer-csv", str(fer),
                        "--votes", str(plus), "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "3 of 4 images with votes" in r.stdout
    obj = torch.load(out, weights_only=False)
    p = obj["logits"].exp().numpy()  # rows in the dataset's order; classes angry..neutral
    assert obj["logits"].shape == (4, 7) and obj["classes"][0] == "angry"
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p[0], [3 / 9, 2 / 9, 0, 0, 0, 0, 4 / 9], atol=1e-5)  # orig 3, contempt dropped
    np.testing.assert_allclose(p[1], [0, 0, 0, 1, 0, 0, 0], atol=1e-5)  # orig 0
    np.testing.assert_allclose(p[2], [0, 0, 0, 0, 0, 0, 1], atol=1e-5)  # orig 2: no usable vote -> own label (6)
    np.testing.assert_allclose(p[3], [0, 0, 0, 0, 0.75, 0, 0.25], atol=1e-5)  # orig 1


def test_a_csv_with_other_labels_than_the_data_is_refused(tmp_path: Path) -> None:
    fer, plus = _files(tmp_path)
    other = write_fer_csv(tmp_path / "other.csv", [(1, face_like(0), "Training"), (3, face_like(1), "Training"),
                                                   (6, face_like(2), "Training"), (4, face_like(3), "Training")],
                          orig_rows=[3, 0, 2, 1])
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{fer}", "--fer-csv", str(other), "--votes", str(plus),
                        "--out", str(tmp_path / "v.pt")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "fer.csv:2 is labelled angry but line 2" in r.stderr and "says disgust" in r.stderr
    assert not (tmp_path / "v.pt").exists()


def test_lines_outside_the_split_and_files_of_another_usage_are_refused(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from vote_targets import cache_lines, vote_targets
    finally:
        sys.path.pop(0)
    votes = np.zeros((1, 10), np.int64)
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with pytest.raises(ValueError, match="line 9: not a Training row"):
        vote_targets(np.array([9]), np.array([0]), classes, {3: 0}, votes, "Training")
    with pytest.raises(ValueError, match="no ':LINE' suffix"):
        cache_lines(np.array(["x.csv"]))
    assert cache_lines(np.array(["fer2013.csv.gz:12", "a:3"])).tolist() == [12, 3]
    fer, _ = _files(tmp_path)  # the FER+ file below says PrivateTest where FER2013 says Training
    plus = write_ferplus_csv(tmp_path / "shifted.csv", [("PrivateTest", f"fer{i}.png", [0] * 9 + [1]) for i in range(5)])
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{fer}", "--fer-csv", str(fer), "--votes", str(plus),
                        "--out", str(tmp_path / "v.pt")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "Usage Training but" in r.stderr and "not joined by row" in r.stderr
    assert not (tmp_path / "v.pt").exists()
