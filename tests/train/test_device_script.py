"""scripts/device_distill.sh end to end on CPU at toy scale: the one command a lent GPU call runs must train the
teacher and the student, evaluate both and leave exactly the files the device tool can bring back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


FERPLUS_CLASSES = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]


def _toy_cache(root: Path, counts: dict[str, int], classes: list[str], size: int = 32) -> None:
    rng = np.random.default_rng(0)
    splits = {}
    k = len(classes)
    for split, n in counts.items():
        labels = np.arange(n) % k
        images = rng.integers(0, 60, (n, size, size), dtype=np.uint8) + (labels * 25)[:, None, None].astype(np.uint8)
        votes = rng.random((n, k)).astype(np.float32) + 3 * np.eye(k, dtype=np.float32)[labels]
        np.savez_compressed(root / f"{split}.npz", images=images, labels=labels, face_found=np.ones(n, bool),
                            ids=np.array([f"{split}{i}" for i in range(n)]),
                            soft_labels=votes / votes.sum(1, keepdims=True))
        splits[split] = {"file": f"{split}.npz", "count": n}
    (root / "index.json").write_text(json.dumps({
        "format": "lightfer-crop-cache", "version": 1, "classes": classes, "channels": 1, "size": size,
        "margin": 0.0, "crop_mode": "align", "splits": splits}))


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.parametrize("task", ["fer2013", "ferplus"])
def test_device_script_trains_evaluates_and_packs_eight_files(tmp_path: Path, task: str) -> None:
    classes = FER_CLASSES if task == "fer2013" else FERPLUS_CLASSES
    cache = tmp_path / "cache"
    cache.mkdir()
    _toy_cache(cache, {"train": 32, "val": 16, "test": 16}, classes)
    dest, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "TASK": task, "DATA": f"cache:{cache}", "DEST": str(dest), "RUN": str(run), "PYTHON": sys.executable,
           "LIGHTFER": f"{sys.executable} -m lightfer", "OMP_NUM_THREADS": "1", "TEACHER_MINUTES": "5",
           "STUDENT_MINUTES": "5", "EXTRA": "device=cpu amp=none channels_last=false data.num_workers=0 "
                                            "batch_size=16 epochs=1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_distill.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(["pipeline.log", "student.pt", "student_eval.json", "student_log.csv", "teacher.pt",
                            "teacher_eval.json", "teacher_log.csv", "teacher_logits.pt"])  # the tool's 8 files
    assert all((dest / n).stat().st_size < 16e6 for n in names)
    student = torch.load(dest / "student.pt", weights_only=False)
    assert "optimizer" not in student and student["model_name"] == "shufflenet_v2_x1_0" and student["ema"]
    assert torch.load(dest / "teacher_logits.pt", weights_only=False)["logits"].shape == (32, len(classes))
    report = json.loads((dest / "student_eval.json").read_text())
    assert set(report["splits"]) == {"val", "test"} and "compare" in report["splits"]["test"]
    assert "done" in (dest / "pipeline.log").read_text()

    from lightfer.eval.evaluate import load_classifier

    teacher = load_classifier(str(dest / "teacher.pt"))  # the stripped files still load for eval / shipping
    assert tuple(teacher.pretrained_cfg.classes) == tuple(classes)
    if task == "ferplus":  # trained on the vote distributions, paired against the shipped FER+ model
        config = yaml.safe_load((run / "student" / "config.yaml").read_text())
        assert config["data"]["target"] == "soft" and config["loss"]["smoothing"] == 0.0
        assert report["splits"]["test"]["compare"]["model_b"] == "shufflenet_v2_x1_0_ferplus"
