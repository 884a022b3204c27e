"""scripts/teacher_logits.py: a teacher checkpoint's flip-averaged logits, and a precomputed logits file mixed in
with a weight (``--logits-member``), checked against the mean probability computed here; bad members are refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightfer.train import main
from lightfer.train.config import config_from_dict
from tests.data.synth import face_like, write_fer_csv

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "scripts" / "teacher_logits.py")]
CLASSES = [f"class_{i}" for i in range(7)]  # the synthetic training set's names, which the teacher keeps


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A one-epoch mini-Xception checkpoint, a 4-image FER2013 csv and that teacher's logits on it."""
    tmp = tmp_path_factory.mktemp("teacher_logits")
    torch.manual_seed(0)
    main(config_from_dict({"epochs": 1, "batch_size": 32, "output_dir": str(tmp / "t"), "progress": False,
                           "model": {"name": "fer_mini_xception"}, "data": {"synthetic_size": 64}}))
    csv = write_fer_csv(tmp / "fer.csv", [(i % 7, face_like(i), "Training") for i in range(4)])
    alone = tmp / "alone.pt"
    r = _run("--data", f"fer2013:{csv}", "--teacher", str(tmp / "t" / "best.pt"), "--flip", "--out", str(alone))
    assert r.returncode == 0, r.stderr
    return tmp, csv, alone


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args, "--threads", "1"], capture_output=True, text=True, cwd=REPO)


def _member(path: Path, logits: torch.Tensor, classes: list[str] = CLASSES) -> Path:
    torch.save({"logits": logits, "classes": classes}, path)
    return path


def test_a_logits_member_joins_the_mean_probability_with_its_weight(setup) -> None:
    tmp, csv, alone = setup
    member = _member(tmp / "member.pt", torch.randn(4, 7, generator=torch.Generator().manual_seed(1)) * 3)
    out = tmp / "mix.pt"
    r = _run("--data", f"fer2013:{csv}", "--teacher", str(tmp / "t" / "best.pt"), "--flip",
             "--logits-member", f"{member}:3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "(weight 3)" in r.stdout and "ensemble with the logits members" in r.stdout
    p_teacher = torch.load(alone, weights_only=False)["logits"].exp()
    p_member = torch.softmax(torch.load(member, weights_only=False)["logits"], 1)
    mix = torch.load(out, weights_only=False)
    torch.testing.assert_close(mix["logits"].exp(), (p_teacher + 3 * p_member) / 4, atol=1e-5, rtol=1e-4)
    assert mix["teacher"].endswith(f"{member}:3") and mix["classes"] == CLASSES
    assert not np.allclose(mix["logits"].numpy(), torch.load(alone, weights_only=False)["logits"].numpy(), atol=1e-3)


@pytest.mark.parametrize("case", ["rows", "classes", "missing", "weight"])
def test_a_member_that_does_not_fit_is_refused_by_name(setup, case: str) -> None:
    tmp, csv, _ = setup
    spec = {"rows": lambda: f"{_member(tmp / 'rows.pt', torch.zeros(5, 7))}:1",
            "classes": lambda: f"{_member(tmp / 'cls.pt', torch.zeros(4, 7), CLASSES[::-1])}:1",
            "missing": lambda: f"{tmp / 'nothing.pt'}:2",
            "weight": lambda: f"{_member(tmp / 'w.pt', torch.zeros(4, 7))}:two"}[case]()
    out = tmp / f"bad_{case}.pt"
    r = _run("--data", f"fer2013:{csv}", "--teacher", str(tmp / "t" / "best.pt"), "--logits-member", spec,
             "--out", str(out))
    want = {"rows": "rows.pt: logits (5, 7)", "classes": "cls.pt: classes", "missing": "no such file",
            "weight": "weight 'two' is not a number"}[case]
    assert r.returncode != 0 and want in r.stderr
    assert not out.exists()
