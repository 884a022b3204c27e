"""The trainer on lightfer.data specs: self-made FER2013 / FER+ files (always run) and the shared copies."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lightfer.losses import prior_from_votes
from lightfer.train import load_model_from_checkpoint, main
from lightfer.train.builders import build_criterion
from lightfer.train.config import config_from_dict
from lightfer.train.data import build_datasets

FERPLUS_HEADER = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                  "contempt", "unknown", "NF"]


@pytest.fixture(scope="module")
def fer_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A learnable FER2013-format CSV (.gz; brightness encodes the class) and a matching fer2013new.csv."""
    root = tmp_path_factory.mktemp("fer")
    rng = np.random.default_rng(0)
    fer, plus = root / "fer2013.csv.gz", root / "fer2013new.csv"
    with gzip.open(fer, "wt", newline="") as f, plus.open("w", newline="") as g:
        w, wp = csv.writer(f), csv.writer(g)
        w.writerow(["emotion", "pixels", "Usage"])
        wp.writerow(FERPLUS_HEADER)
        for i in range(210):
            usage = "Training" if i < 140 else "PublicTest"
            y = i % 7
            img = np.clip(30 + 30 * y + rng.normal(0, 12, 48 * 48), 0, 255).astype(np.uint8)
            w.writerow([y, " ".join(map(str, img)), usage])
            votes = [0] * 10
            fp = [4, 6, 3, 0, 5, 2, 1][y]  # FER2013 code -> FER+ column (angry->anger, ..., neutral->neutral)
            votes[fp] = 7
            votes[(fp + 1) % 8] += 3
            wp.writerow([usage, f"fer{i:07d}.png", *votes])
    return fer, plus


def _cfg(out: Path, spec: str, **extra) -> object:
    d = {"epochs": 2, "batch_size": 35, "output_dir": str(out), "progress": False,
         "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
         "data": {"spec": spec, "train_split": "train", "val_split": "val"}}
    for k, v in extra.items():
        d.setdefault(k, {}).update(v) if isinstance(v, dict) else d.__setitem__(k, v)
    return config_from_dict(d)


def test_fer2013_spec_end_to_end_with_a_registered_model(tmp_path: Path, fer_files) -> None:
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, f"fer2013:{fer_files[0]}", model={"name": "fer_mini_xception"})
    res = main(cfg)
    assert res["last"]["epoch"] == 2
    model = load_model_from_checkpoint(tmp_path / "best.pt")
    assert model.pretrained_cfg.classes == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 7)


def test_ferplus_votes_prior_and_soft_targets(tmp_path: Path, fer_files, tiny) -> None:
    spec = f"ferplus:{fer_files[0]},{fer_files[1]}"
    cfg = _cfg(tmp_path, spec, loss={"fpdls": True, "fpdls_prior": "votes", "fpdls_alpha": 0.8})
    train, val = build_datasets(cfg.data)
    crit = build_criterion(cfg, train, train.num_classes, None, torch.device("cpu"))
    want = prior_from_votes(train.soft_labels, train.labels)
    assert torch.allclose(crit.prior, want)
    for k in np.unique(train.labels):  # each file row votes 7 for its class and 3 for the next FER+ column
        expect = torch.zeros(8)
        expect[k], expect[(k + 1) % 8] = 0.7, 0.3
        assert torch.allclose(crit.prior[k], expect, atol=1e-6), k
    assert torch.allclose(crit.prior[7], torch.full((8,), 1 / 8))  # contempt: no samples, uniform row
    soft = _cfg(tmp_path / "soft", spec, data={"target": "soft"})
    torch.manual_seed(0)
    res = main(soft, model=tiny(num_classes=8))
    assert res["last"]["epoch"] == 2


def test_confusion_prior_from_a_teacher_and_bf16_autocast(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    cfg = config_from_dict({"epochs": 1, "batch_size": 32, "output_dir": str(tmp_path), "progress": False,
                            "amp": "bf16", "teacher": {"name": "unused"},
                            "loss": {"fpdls": True, "fpdls_prior": "confusion", "fpdls_gamma": 1.0},
                            "data": {"synthetic_size": 128}})
    res = main(cfg, model=tiny(), teacher=tiny())
    assert np.isfinite(res["last"]["train_loss"])
    # the prior as used is saved with the run and loads back as loss.fpdls_prior: file:PATH
    saved = tmp_path / "fpdls_prior.txt"
    prior = np.loadtxt(saved)
    assert prior.shape == (7, 7) and np.allclose(prior.sum(1), 1.0, atol=1e-5)
    again = config_from_dict({"loss": {"fpdls": True, "fpdls_prior": f"file:{saved}"}, "data": {"synthetic_size": 8}})
    crit = build_criterion(again, None, 7, None, torch.device("cpu"))  # type: ignore[arg-type]
    assert torch.allclose(crit.prior, torch.as_tensor(prior, dtype=torch.float32), atol=1e-6)


@pytest.mark.data
def test_shared_fer2013_and_ferplus(shared_data: Path, tmp_path: Path, tiny) -> None:
    fer = shared_data / "fer2013" / "fer2013.csv.gz"
    spec = f"ferplus:{fer},{shared_data / 'ferplus' / 'fer2013new.csv'}"
    cfg = _cfg(tmp_path, spec, data={"train_split": "val", "val_split": None, "limit_train": 512},
               loss={"fpdls": True, "fpdls_prior": "votes"}, epochs=1)
    train, _ = build_datasets(cfg.data)
    assert train.num_classes == 8 and len(train) == 512
    crit = build_criterion(cfg, train, 8, None, torch.device("cpu"))
    p = crit.prior
    assert torch.allclose(p.sum(1), torch.ones(8), atol=1e-5)
    # every class's own votes dominate its prior row wherever the class has samples
    present = torch.as_tensor(np.bincount(train.labels, minlength=8) > 0)
    assert (p.argmax(1) == torch.arange(8))[present].all()
    torch.manual_seed(0)
    res = main(cfg, model=tiny(num_classes=8, size=48), datasets=(train, None))
    assert res["last"]["epoch"] == 1 and np.isfinite(res["last"]["train_loss"])
