"""Trainer: learns a synthetic task, one step lowers the loss, bit-for-bit resume, KD with precomputed
teacher logits, manifold distillation, SAM + F-PDLS + EMA + plateau, soft targets, checkpoints."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightfer.train import main
from lightfer.train.checkpoint import load_checkpoint, save_checkpoint
from lightfer.train.config import config_from_dict
from lightfer.train.data import Mix, SyntheticFER, augment_batch, mix_batch, to_model_input
from lightfer.train.tasks import SupervisedTask
from lightfer.train.config import AugmentConfig


def _cfg(out: Path, **over) -> object:
    d = {"epochs": 2, "batch_size": 32, "output_dir": str(out), "progress": False, "seed": 3,
         "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
         "data": {"synthetic_size": 512}}
    for k, v in over.items():
        sec, _, key = k.partition("__")
        if key:
            d.setdefault(sec, {})[key] = v
        else:
            d[sec] = v
    return config_from_dict(d)


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_two_epochs_beat_chance_and_write_outputs(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    res = main(_cfg(tmp_path), model=tiny())
    assert res["best_acc"] > 0.35  # chance is 1/7 = 0.14
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config_from_dict(saved) == _cfg(tmp_path)  # the resolved config round-trips
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 2 and set(ck["rng"]) >= {"python", "numpy", "torch"}
    assert load_checkpoint(tmp_path / "best.pt")["best"]["acc"] == pytest.approx(res["best_acc"])
    assert not list(tmp_path.glob("*.tmp"))


def test_one_step_reduces_the_loss(tiny) -> None:
    torch.manual_seed(0)
    ds = SyntheticFER(64, seed=0)
    x = to_model_input(torch.stack([ds[i][0] for i in range(64)]), 32, 1, (0.5,), (0.5,))
    y = torch.tensor([ds[i][1] for i in range(64)])
    model, task = tiny().eval(), SupervisedTask()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = task(model, x, y)[0]["ce"]
    before.backward()
    opt.step()
    after = task(model, x, y)[0]["ce"]
    assert after.item() < before.item() - 1e-3


@pytest.mark.parametrize("variant", ["sgd_cosine_ema", "sam_step"])
def test_resume_is_bit_for_bit(tmp_path: Path, tiny, variant: str) -> None:
    over = {"augment": {"hflip": 0.5, "crop_pad": 2, "rotate": 10.0, "erase": 0.3}, "epochs": 4}
    if variant == "sgd_cosine_ema":
        over.update(optim={"name": "sgd", "lr": 0.05, "nesterov": True}, schedule={"name": "cosine", "warmup_epochs": 1},
                    ema_decay=0.9)
    else:
        over.update(optim={"name": "sgd", "lr": 0.05, "sam": True, "sam_rho": 0.05},
                    schedule={"name": "step", "step_size": 1, "gamma": 0.5})
    over["data"] = {"synthetic_size": 128}
    torch.manual_seed(1)
    main(_cfg(tmp_path / "straight", **over), model=tiny())
    torch.manual_seed(1)
    half = _cfg(tmp_path / "split", **over)
    main(half, model=tiny(), stop_after=2)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2
    torch.manual_seed(99)  # the resumed process starts from a different global RNG state
    main(half, model=tiny(), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    if a["ema"] is not None:
        assert all(torch.equal(v, b["ema"][k]) for k, v in a["ema"].items())
    assert _rows(tmp_path / "straight") == [
        {**r, "seconds": s["seconds"]} for r, s in zip(_rows(tmp_path / "split"), _rows(tmp_path / "straight"))
    ]


def test_in_memory_split_trains_exactly_as_the_loader(tmp_path: Path, tiny) -> None:
    """data.in_memory draws the loader's very batches from tensors: same weights, same log, bit for bit."""
    over = {"augment": {"hflip": 0.5, "crop_pad": 2, "rotate": 10.0, "erase": 0.3}, "epochs": 2, "ema_decay": 0.9,
            "optim": {"name": "sgd", "lr": 0.05, "nesterov": True}, "data": {"synthetic_size": 96},
            "batch_size": 20}  # a short last batch
    runs = {}
    for name, in_memory in (("loader", False), ("tensors", True)):
        torch.manual_seed(1)
        main(_cfg(tmp_path / name, **{**over, "data": {**over["data"], "in_memory": in_memory}}), model=tiny())
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")
    for part in ("model", "ema"):
        for k, v in runs["loader"][part].items():
            assert torch.equal(v, runs["tensors"][part][k]), (part, k)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(_rows(tmp_path / "loader")) == drop(_rows(tmp_path / "tensors"))


class _VirtualClock:
    """Stands in for the engine's ``time`` module: each epoch costs ``costs[i]`` virtual seconds (the last one
    repeats), set-up costs nothing, so time-budget decisions do not depend on the machine's speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, costs: list[float]) -> None:
        import lightfer.train.engine as engine

        self.now, self.epochs, self.costs = 0.0, 0, costs
        real = engine.train_one_epoch

        def timed(*a, **kw):
            out = real(*a, **kw)
            self.now += self.costs[min(self.epochs, len(self.costs) - 1)]
            self.epochs += 1
            return out

        monkeypatch.setattr(engine, "train_one_epoch", timed)
        monkeypatch.setattr(engine, "time", self)

    def perf_counter(self) -> float:
        return self.now


_BUDGET_RUN = {"optim": {"name": "sgd", "lr": 0.05, "nesterov": True}, "ema_decay": 0.9,
               "schedule": {"name": "cosine", "warmup_epochs": 1}, "data": {"synthetic_size": 128}}


def test_time_budget_shortens_the_schedule_to_what_fits(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # a straight 3-epoch run is what a 10-epoch config squeezed into 35 s at 10 s per epoch must equal, bit for bit
    torch.manual_seed(1)
    main(_cfg(tmp_path / "three", epochs=3, **_BUDGET_RUN), model=tiny())
    _VirtualClock(monkeypatch, [10.0])
    cfg = _cfg(tmp_path / "fit", epochs=10, **_BUDGET_RUN)
    torch.manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="lightfer.train.engine"):
        res = main(cfg, model=tiny(), time_budget=35.0, stop_after=2)  # 1 + (35 - 10) // 10 = 3 epochs
    assert "shortened from 10 to 3 epochs" in caplog.text
    assert cfg.epochs == 10  # the caller's config is not changed
    assert res["epochs"] == 3 and load_checkpoint(tmp_path / "fit" / "last.pt")["fitted_epochs"] == 3
    assert yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())["epochs"] == 3
    torch.manual_seed(5)
    res = main(cfg, model=tiny(), resume=True)  # no budget now: the shortened length is kept
    assert res["epochs"] == 3 and [r["epoch"] for r in _rows(tmp_path / "fit")] == ["1", "2", "3"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("three", "fit"))
    assert b["config"]["epochs"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["lr"] for r in _rows(tmp_path / "three")] == [r["lr"] for r in _rows(tmp_path / "fit")]


def test_fit_share_leaves_slack_for_slower_later_epochs(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 s per epoch, 105 s budget: 1 + 95 // 10 = 10 epochs fit; with fit_share 0.8, 1 + 76 // 10 = 8
    _VirtualClock(monkeypatch, [10.0])
    res = main(_cfg(tmp_path, epochs=20, **_BUDGET_RUN), model=tiny(), time_budget=105.0, fit_share=0.8, stop_after=1)
    assert res["epochs"] == 8


def test_time_budget_refits_after_epoch_3_at_the_pace_of_epochs_2_and_3(tmp_path: Path, tiny,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from lightfer.train.engine import _fit_epochs

    assert _fit_epochs(40, budget=300.0, spent=50.0, pace=10.0, done=3) == 28
    assert _fit_epochs(40, budget=60.0, spent=50.0, pace=20.0, done=3) == 3  # never under what has run
    # a slow first epoch (30 s, then 10 s): 1 + 270 // 30 = 10 epochs fitted, after epoch 3 (50 s) 3 + 250 // 10 = 28
    _VirtualClock(monkeypatch, [30.0, 10.0])
    with caplog.at_level(logging.WARNING, logger="lightfer.train.engine"):
        res = main(_cfg(tmp_path / "slow_first", epochs=40, **_BUDGET_RUN), model=tiny(), time_budget=300.0,
                   stop_after=4)
    assert "shortened from 40 to 10 epochs" in caplog.text and "lengthened from 10 to 28 epochs" in caplog.text
    assert res["epochs"] == 28 and [r["epoch"] for r in _rows(tmp_path / "slow_first")] == ["1", "2", "3", "4"]
    assert load_checkpoint(tmp_path / "slow_first" / "last.pt")["fitted_epochs"] == 28
    assert yaml.safe_load((tmp_path / "slow_first" / "config.yaml").read_text())["epochs"] == 28
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "slow_first")]
    assert lrs[3] > lrs[2] * 0.95  # epoch 4 starts on the 28-epoch cosine, near its top
    # later epochs slower than the first (10 s, then 20 s): 1 + 95 // 10 = 10 fitted, after epoch 3 (50 s)
    # 3 + 55 // 20 = 5, so the shortened cosine still ends inside the budget instead of being cut by the stop rule
    _VirtualClock(monkeypatch, [10.0, 20.0])
    res = main(_cfg(tmp_path / "slow_later", epochs=20, **_BUDGET_RUN), model=tiny(), time_budget=105.0)
    assert res["epochs"] == 5 and [r["epoch"] for r in _rows(tmp_path / "slow_later")] == ["1", "2", "3", "4", "5"]
    assert float(_rows(tmp_path / "slow_later")[-1]["lr"]) < 0.2 * 0.05  # the last epoch ran at the cosine's tail
    # a schedule under 10 epochs is not re-fitted (3 fitted after epoch 1, the test above), nor is any in --resume


def test_time_budget_stops_before_an_epoch_that_would_overrun(tmp_path: Path, tiny,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _VirtualClock(monkeypatch, [10.0, 30.0])  # the first epoch looked cheap; the next ones are not
    cfg = _cfg(tmp_path, epochs=4, **_BUDGET_RUN)
    res = main(cfg, model=tiny(), time_budget=45.0)  # fits 4 after epoch 1; after epoch 2 (40 s) 30 more overrun
    assert res["epochs"] == 4 and [r["epoch"] for r in _rows(tmp_path)] == ["1", "2"]
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 2 and ck["fitted_epochs"] is None
    assert main(cfg, model=tiny(), resume=True)["last"]["epoch"] == 4  # the full schedule continues
    assert main(_cfg(tmp_path / "ample", epochs=2, **_BUDGET_RUN), model=tiny(), time_budget=1e6)["epochs"] == 2


def test_epoch_pace_leaves_out_the_first_steps_warm_ups() -> None:
    from lightfer.train.engine import _epoch_pace, _fit_epochs

    # 100 steps: the 90 after the first 10 took 45 s, so a whole epoch's steps take 50 s, + 2 s of validation
    assert _epoch_pace(80.0, {"steps": 100, "skipped": 10, "steady": 45.0}, 2.0) == pytest.approx(52.0)
    assert _epoch_pace(30.0, {"steps": 100, "skipped": 10, "steady": 45.0}, 2.0) == 30.0  # never above the epoch
    assert _epoch_pace(9.0, {"steps": 4, "skipped": 1, "steady": 6.0}, 1.0) == 9.0  # too few steps timed
    assert _epoch_pace(9.0, {}, 1.0) == 9.0
    assert _fit_epochs(70, budget=240.0, spent=90.0, pace=10.0) == 16 and _fit_epochs(70, 60.0, 90.0, 10.0) == 1
    assert _fit_epochs(5, 1e6, 1.0, 1.0) == 5


def test_train_one_epoch_times_its_steady_steps(tiny) -> None:
    from lightfer.train.config import config_from_dict
    from lightfer.train.engine import train_one_epoch
    from torch.utils.data import DataLoader

    cfg = config_from_dict({"progress": False, "data": {"synthetic_size": 64}})
    ds = SyntheticFER(64, seed=0)
    loader = DataLoader([(i, *ds[i]) for i in range(64)], batch_size=4)
    model = tiny()
    timing: dict[str, float] = {}
    train_one_epoch(model, SupervisedTask(), loader, torch.optim.SGD(model.parameters(), lr=0.01),
                    torch.device("cpu"), 0, cfg, prep=lambda x: to_model_input(x, 32, 1, (0.5,), (0.5,)),
                    timing=timing)
    assert timing["steps"] == 16 and timing["skipped"] == 1 and timing["steady"] > 0


def test_kd_with_precomputed_teacher_logits(tmp_path: Path, tiny, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    teacher = tiny(width=16)
    cfg = _cfg(tmp_path / "kd", loss={"task": "kd", "kd_temperature": 8.0, "kd_alpha": 0.4},
               teacher={"name": "unused_here", "logits_file": str(tmp_path / "t_logits.pt")}, epochs=1)
    res = main(cfg, model=tiny(), teacher=teacher)
    table = torch.load(tmp_path / "t_logits.pt", weights_only=False)
    assert table["logits"].shape == (512, 7)
    # the table is the teacher's output on the un-augmented training images, in dataset order
    ds = SyntheticFER(512, seed=cfg.seed * 2 + 1)
    with torch.no_grad():
        want = teacher(to_model_input(torch.stack([ds[i][0] for i in range(5)]), 32, 1, (0.5,), (0.5,)))
    assert torch.allclose(table["logits"][:5], want, atol=1e-5)
    row = _rows(tmp_path / "kd")[0]
    assert float(row["train_loss_kd"]) > 0 and float(row["train_loss_ce"]) > 0
    assert res["last"]["epoch"] == 1

    class Boom(torch.nn.Module):
        def forward(self, x):  # the second run must read the file, not run the teacher
            raise AssertionError("teacher ran although its logits were precomputed")
    with caplog.at_level(logging.WARNING, logger="lightfer"):
        main(cfg, model=tiny(), teacher=Boom())
    assert "using the file" not in caplog.text
    other = _cfg(tmp_path / "kd3", loss={"task": "kd"}, epochs=1,
                 teacher={"name": "another", "tta_flip": True, "logits_file": str(tmp_path / "t_logits.pt")})
    with caplog.at_level(logging.WARNING, logger="lightfer"):
        main(other, model=tiny(), teacher=Boom())  # the file still wins, and the log says it differs
    assert "without flip averaging" in caplog.text and "made by teacher 'unused_here'" in caplog.text
    caplog.clear()
    # a written file needs no teacher at all (scripts/teacher_logits.py, scripts/vote_targets.py)
    anon = _cfg(tmp_path / "kd4", loss={"task": "kd"}, epochs=1, teacher={"logits_file": str(tmp_path / "t_logits.pt")})
    with caplog.at_level(logging.WARNING, logger="lightfer"):
        assert main(anon, model=tiny())["last"]["epoch"] == 1
    assert "made by teacher" not in caplog.text
    missing = _cfg(tmp_path / "kd5", loss={"task": "kd"}, epochs=1, teacher={"logits_file": str(tmp_path / "no.pt")})
    with pytest.raises(FileNotFoundError, match="no.pt does not exist and no teacher.name"):
        main(missing, model=tiny())
    missing.teacher.logits_file = None  # past validation (e.g. edited in code): refused before any step
    with pytest.raises(ValueError, match="kd needs a teacher: teacher.name or a written teacher.logits_file"):
        main(missing, model=tiny())
    bad = _cfg(tmp_path / "kd2", loss={"task": "kd"}, data={"synthetic_size": 256},
               teacher={"name": "x", "logits_file": str(tmp_path / "t_logits.pt")}, epochs=1)
    with pytest.raises(ValueError, match="do not fit 256 samples"):
        main(bad, model=tiny(), teacher=teacher)


def test_manifold_distillation_run(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, loss={"task": "manifold", "kd_alpha": 0.5, "md_beta": 2.0, "md_samples": 64,
                               "md_layers": [["features.2", "features.2"], ["features.5", "features.5"]]},
               teacher={"name": "unused_here"}, epochs=1)
    student, teacher = tiny(), tiny(width=12)
    w0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    main(cfg, model=student, teacher=teacher)
    row = _rows(tmp_path)[0]
    assert float(row["train_loss_md"]) > 0 and float(row["train_loss_kd"]) > 0
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in w0.items())  # frozen, BN stats included
    assert all(p.grad is None for p in teacher.parameters())  # gradients reach the student only
    # loss.md_grids: both 16x16 / 8x8 maps pooled to 12x12 / 5x5; a grid finer than the maps is refused
    def grid_cfg(grids: list[int]) -> object:
        return _cfg(tmp_path / f"g{grids[0]}", loss={**vars(cfg.loss), "md_grids": grids}, teacher={"name": "x"},
                    epochs=1)

    main(grid_cfg([12, 5]), model=tiny(), teacher=tiny(width=12))
    assert float(_rows(tmp_path / "g12")[0]["train_loss_md"]) > 0
    with pytest.raises(ValueError, match="cannot pool a 16x16"):
        main(grid_cfg([20, 5]), model=tiny(), teacher=tiny(width=12))
    bad = _cfg(tmp_path / "b", loss={"task": "manifold", "md_layers": [["nope", "features.2"]]},
               teacher={"name": "x"}, epochs=1)
    with pytest.raises(ValueError, match="no sub-module 'nope'"):
        main(bad, model=tiny(), teacher=tiny())


def test_manifold_distillation_with_precomputed_teacher_logits(tmp_path: Path, tiny) -> None:
    """task manifold + teacher.logits_file: the KD term reads the file, the teacher still runs for its features."""
    torch.manual_seed(0)
    file = tmp_path / "t_logits.pt"
    loss = {"task": "manifold", "kd_alpha": 0.5, "md_beta": 2.0, "md_samples": 64,
            "md_layers": [["features.2", "features.2"]]}
    teacher = tiny(width=12)
    calls = []
    teacher.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))  # counts cut-short passes too
    main(_cfg(tmp_path / "a", loss=loss, teacher={"name": "t", "logits_file": str(file)}, epochs=1),
         model=tiny(), teacher=teacher)
    table = torch.load(file, weights_only=False)
    assert table["logits"].shape == (512, 7)
    assert sum(calls) > 512  # the table (512 images) and then every training batch for the features
    first = _rows(tmp_path / "a")[0]
    assert float(first["train_loss_md"]) > 0
    table["logits"] = torch.zeros_like(table["logits"]).index_fill_(1, torch.tensor([0]), 30.0)  # all "class 0"
    torch.save(table, file)
    main(_cfg(tmp_path / "b", loss=loss, teacher={"name": "t", "logits_file": str(file)}, epochs=1),
         model=tiny(), teacher=tiny(width=12))
    second = _rows(tmp_path / "b")[0]
    assert float(second["train_loss_kd"]) > 2 * float(first["train_loss_kd"])  # the KD targets came from the file


def test_sam_fpdls_ema_plateau_run(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, optim={"name": "sgd", "lr": 0.05, "sam": True, "sam_adaptive": True, "sam_rho": 0.5},
               loss={"fpdls": True, "fpdls_alpha": 0.9, "fpdls_gamma": 2.0},
               schedule={"name": "plateau", "patience": 0, "plateau_metric": "val_acc"}, ema_decay=0.5)
    res = main(cfg, model=tiny())
    assert res["best_acc"] > 0.25
    assert load_checkpoint(tmp_path / "last.pt")["ema"] is not None


def test_soft_targets(tmp_path: Path, tiny) -> None:
    class Soft(torch.utils.data.Dataset):
        def __init__(self, base: SyntheticFER) -> None:
            self.base, self.classes = base, base.classes

        def __len__(self) -> int:
            return len(self.base)

        def __getitem__(self, i: int):
            x, y = self.base[i]
            soft = torch.full((7,), 0.05)
            soft[y] = 0.7
            return x, y, soft

    torch.manual_seed(0)
    cfg = _cfg(tmp_path, data={"target": "soft", "synthetic_size": 512})
    res = main(cfg, model=tiny(), datasets=(Soft(SyntheticFER(512, seed=1)), Soft(SyntheticFER(256, seed=2))))
    assert res["best_acc"] > 0.3


def test_non_finite_loss_is_reported(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        main(_cfg(tmp_path, optim={"name": "sgd", "lr": 1e30}, data={"synthetic_size": 128}, epochs=1), model=tiny())


def test_resume_without_checkpoint_names_the_file(tmp_path: Path, tiny) -> None:
    from lightfer.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="last.pt not found"):
        main(_cfg(tmp_path), model=tiny(), resume=True)


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path: Path) -> None:
    p = save_checkpoint({"a": torch.ones(2)}, tmp_path / "c.pt")
    with pytest.raises(Exception):
        save_checkpoint({"bad": lambda: 0}, p)  # lambdas cannot be pickled
    assert torch.equal(load_checkpoint(p)["a"], torch.ones(2))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.pt"]


def test_augment_and_model_input() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 20, 20)
    same = augment_batch(x, AugmentConfig(hflip=0.0))
    assert torch.equal(same, x)
    flipped = augment_batch(x, AugmentConfig(hflip=1.0))
    assert torch.equal(flipped, x.flip(3))
    out = augment_batch(x, AugmentConfig(hflip=0.5, crop_pad=3, rotate=15, erase=1.0))
    assert out.shape == x.shape and not torch.equal(out, x)
    noisy = augment_batch(x, AugmentConfig(hflip=0.0, noise=1.0, noise_std=0.1))
    assert noisy.min() >= 0 and noisy.max() <= 1 and 0.005 < (noisy - x).std() < 0.1
    assert torch.equal(augment_batch(x, AugmentConfig(hflip=0.0, noise=0.0, noise_std=0.1)), x)
    gray = to_model_input(x, 32, 1, (0.5,), (0.5,))
    assert gray.shape == (4, 1, 32, 32)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    assert torch.allclose(to_model_input(x, None, 1, (0.0,), (1.0,)), luma, atol=1e-6)
    assert to_model_input(luma, None, 3, (0.5,) * 3, (0.5,) * 3).shape == (4, 3, 20, 20)
    with pytest.raises(ValueError, match="channels"):
        to_model_input(torch.rand(1, 2, 8, 8), None, 3, (0.5,) * 3, (0.5,) * 3)


def test_data_is_reindexed_into_the_models_class_order(tmp_path: Path, tiny) -> None:
    from lightfer.data import FERDataset
    from lightfer.models import FER2013_CLASSES

    def as_fer(ds: SyntheticFER) -> FERDataset:
        imgs = (torch.stack([ds[i][0][0] for i in range(len(ds))]) * 255).round().to(torch.uint8).numpy()
        return FERDataset(images=imgs, labels=ds.labels.numpy(), classes=tuple(reversed(FER2013_CLASSES)))

    train, val = as_fer(SyntheticFER(512, seed=1)), as_fer(SyntheticFER(256, seed=2))
    torch.manual_seed(0)
    model = tiny()
    model.pretrained_cfg = model.pretrained_cfg.__class__(input_size=32, classes=FER2013_CLASSES)
    res = main(_cfg(tmp_path), model=model, datasets=(train, val))
    assert res["best_acc"] > 0.35
    x = to_model_input(torch.from_numpy(val.images[:, None]).float() / 255, 32, 1, (0.5,), (0.5,))
    with torch.no_grad():
        pred = model.eval()(x).argmax(1).numpy()
    model_index = np.array([FER2013_CLASSES.index(c) for c in val.classes])[val.labels]
    right, raw = (pred == model_index).mean(), (pred == val.labels).mean()
    assert right > 0.35 and right > raw + 0.2  # outputs follow the model's class order, not the dataset's


def test_teacher_from_a_training_checkpoint_uses_its_ema(tmp_path: Path, tiny) -> None:
    from lightfer.train import load_model_from_checkpoint

    torch.manual_seed(0)
    first = _cfg(tmp_path / "teacher", model={"name": "fer_mini_xception"}, data={"synthetic_size": 64}, epochs=1,
                 ema_decay=0.9)
    main(first)
    ck = load_checkpoint(tmp_path / "teacher" / "best.pt")
    assert any(not torch.equal(v, ck["model"][k]) for k, v in ck["ema"].items())  # EMA differs from raw weights
    kd = _cfg(tmp_path / "student", loss={"task": "kd"}, data={"synthetic_size": 64}, epochs=1,
              teacher={"name": "fer_mini_xception", "checkpoint": str(tmp_path / "teacher" / "best.pt"),
                       "logits_file": str(tmp_path / "logits.pt")})
    main(kd, model=tiny())
    table = torch.load(tmp_path / "logits.pt", weights_only=False)["logits"]
    teacher = load_model_from_checkpoint(tmp_path / "teacher" / "best.pt")  # EMA weights, 64 px input
    ds = SyntheticFER(64, seed=kd.seed * 2 + 1)
    with torch.no_grad():
        want = teacher(to_model_input(torch.stack([ds[i][0] for i in range(4)]), 64, 1, (0.5,), (0.5,)))
    assert torch.allclose(table[:4], want, atol=1e-4)


def test_teacher_checkpoint_at_live_takes_the_runs_live_weights(tmp_path: Path) -> None:
    """``teacher.checkpoint: PATH@live`` loads the run's live weights (``lightfer eval --no-ema`` may pick them);
    ``@ema`` and no suffix the EMA; a suffix the file cannot honour is an error naming the file."""
    from lightfer.train.builders import build_teacher
    from lightfer.train.checkpoint import CheckpointError
    from lightfer.train.config import TrainConfig

    torch.manual_seed(0)
    main(_cfg(tmp_path / "teacher", model={"name": "fer_mini_xception"}, data={"synthetic_size": 64}, epochs=1,
              ema_decay=0.9))
    best = tmp_path / "teacher" / "best.pt"
    ck = load_checkpoint(best)
    x = torch.randn(3, 1, 64, 64)

    def teacher_logits(spec: str) -> torch.Tensor:
        cfg = TrainConfig()
        cfg.teacher.name, cfg.teacher.checkpoint = "fer_mini_xception", spec
        with torch.no_grad():
            return build_teacher(cfg, SyntheticFER(1).classes)(x)

    def reference(state: dict) -> torch.Tensor:
        from lightfer.models import create_model

        net = create_model("fer_mini_xception", classes=SyntheticFER(1).classes)
        net.load_state_dict(state)
        with torch.no_grad():
            return net.eval()(x)

    live, ema = reference(ck["model"]), reference(ck["ema"])
    assert not torch.allclose(live, ema, atol=1e-3)
    torch.testing.assert_close(teacher_logits(f"{best}@live"), live, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(teacher_logits(f"{best}@ema"), ema, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(teacher_logits(str(best)), ema, atol=1e-4, rtol=1e-4)
    plain = tmp_path / "plain.pt"
    torch.save(ck["model"], plain)
    with pytest.raises(CheckpointError, match="plain.pt.*live weights"):
        teacher_logits(f"{plain}@live")
    with pytest.raises(ValueError, match="@ema or @live"):
        teacher_logits(f"{best}@best")

def test_model_with_the_wrong_number_of_outputs_is_refused(tmp_path: Path, tiny) -> None:
    with pytest.raises(ValueError, match="5 outputs"):
        main(_cfg(tmp_path), model=tiny(num_classes=5))


def test_ema_averages_parameters_and_bn_statistics_with_warm_up():
    """EMA: parameters and BatchNorm statistics averaged with the warm-up decay, counters copied."""
    from lightfer.train.builders import ModelEma

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEma(net, decay=0.999)
    w0 = net[0].weight.detach().clone()
    v0 = net[1].running_var.detach().clone()  # ones
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(16, 3) * 5)  # moves the running statistics
    assert not torch.allclose(net[1].running_var, v0)
    ema.update(net)
    d = min(0.999, 2 / 11)  # first update: (1 + t) / (10 + t) with t = 1
    torch.testing.assert_close(ema.module[0].weight, d * w0 + (1 - d) * (w0 + 1.0))
    torch.testing.assert_close(ema.module[1].running_var, d * v0 + (1 - d) * net[1].running_var)
    assert int(ema.module[1].num_batches_tracked) == 1
    for _ in range(9000):  # (1 + t) / (10 + t) reaches 0.999 at t = 8,991
        ema.update(net)
    assert ema.current_decay() == 0.999
    torch.testing.assert_close(ema.module[0].weight, net[0].weight, atol=1e-2, rtol=0)
    torch.testing.assert_close(ema.module[1].running_var, net[1].running_var, atol=1e-2, rtol=0)
    # the fused update is the per-tensor lerp bit for bit
    ref = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        net[0].weight.mul_(-0.5)
    ema.update(net)
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.equal(v, ref[k].lerp(net.state_dict()[k], 1 - 0.999)), k


def test_kd_from_a_shipped_teacher_with_flip_averaged_logits(tmp_path: Path) -> None:
    """Born-again KD: ``teacher.pretrained`` loads the shipped weights, ``teacher.tta_flip`` writes
    log-mean-softmax logits over image + mirror, and a teacher with other classes is refused."""
    from lightfer.data import FERDataset
    from lightfer.models import FER2013_CLASSES, create_model

    def as_fer(ds: SyntheticFER, classes: tuple[str, ...] = FER2013_CLASSES) -> FERDataset:
        imgs = (torch.stack([ds[i][0][0] for i in range(len(ds))]) * 255).round().to(torch.uint8).numpy()
        return FERDataset(images=imgs, labels=ds.labels.numpy(), classes=classes)

    train, val = as_fer(SyntheticFER(48, seed=1)), as_fer(SyntheticFER(16, seed=2))
    teacher_cfg = {"name": "shufflenet_v2_x0_5_fer2013", "pretrained": True, "tta_flip": True,
                   "logits_file": str(tmp_path / "logits.pt")}
    kd = _cfg(tmp_path / "s", loss={"task": "kd"}, epochs=1, model={"name": "shufflenet_v2_x0_5", "input_size": 32},
              teacher=teacher_cfg)
    main(kd, datasets=(train, val))
    saved = torch.load(tmp_path / "logits.pt", weights_only=False)
    assert saved["flip"] is True and saved["pretrained"] is True
    teacher = create_model("shufflenet_v2_x0_5_fer2013", pretrained=True)
    pc = teacher.pretrained_cfg
    raw = torch.from_numpy(train.images[:6, None]).float() / 255
    x = to_model_input(raw, pc.input_size, pc.in_chans, pc.mean, pc.std)
    with torch.no_grad():
        want = ((teacher(x).softmax(1) + teacher(x.flip(-1)).softmax(1)) / 2).log()
        plain = teacher(x).log_softmax(1)
    assert torch.allclose(saved["logits"][:6], want, atol=1e-4)
    assert not torch.allclose(saved["logits"][:6], plain, atol=1e-3)  # the mirror really was averaged in

    other = tuple(f"class_{i}" for i in range(7))
    bad = _cfg(tmp_path / "b", loss={"task": "kd"}, epochs=1, model={"name": "shufflenet_v2_x0_5", "input_size": 32},
               teacher={**teacher_cfg, "logits_file": str(tmp_path / "bad.pt")})
    with pytest.raises(ValueError, match="same classes"):
        main(bad, datasets=(as_fer(SyntheticFER(16, seed=1), other), as_fer(SyntheticFER(8, seed=2), other)))


def test_md_teacher_stops_after_its_last_hooked_layer(tiny) -> None:
    """With precomputed logits the MD teacher runs only as far as its hooked layers; the MD term is unchanged."""
    from lightfer.losses import ManifoldDistillation
    from lightfer.train.tasks import DistillationTask

    torch.manual_seed(0)
    student, teacher = tiny(), tiny(width=12).eval()
    ran = []
    teacher.fc.register_forward_hook(lambda *_: ran.append("fc"))
    task = DistillationTask(teacher, 4.0, 0.5, md=ManifoldDistillation(num_samples=16), md_beta=1.0,
                            md_layers=[["features.2", "features.2"], ["features.5", "features.5"]], student=student)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 7, (8,))
    with torch.no_grad():
        t_logits = teacher(x)
    ran.clear()
    torch.manual_seed(1)
    cut, _ = task(student, x, y, teacher_logits=t_logits)
    assert ran == []  # fc never ran
    torch.manual_seed(1)
    full, _ = task(student, x, y)  # no logits given: the whole teacher runs
    assert ran == ["fc"]
    for k in ("ce", "kd", "md"):
        assert torch.allclose(cut[k], full[k]), k
    assert task.teacher_hooks is not None and not task.teacher_hooks.stop  # a plain forward is not cut short
    assert teacher(x).shape == (8, 7)


def test_teacher_amp_runs_only_the_teacher_in_bf16(tiny) -> None:
    """``teacher_amp`` autocasts the online teacher alone: its forward runs in bf16, the student's logits stay
    float32, and the KD term stays close to the float32 teacher's."""
    from lightfer.train.tasks import DistillationTask

    torch.manual_seed(0)
    student, teacher = tiny().eval(), tiny(width=12).eval()  # eval: the two student passes are the same
    seen = []
    teacher.fc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 7, (8,))
    plain, _ = DistillationTask(teacher, 4.0, 0.5)(student, x, y)
    low, logits = DistillationTask(teacher, 4.0, 0.5, teacher_amp=torch.bfloat16)(student, x, y)
    assert seen == [torch.float32, torch.bfloat16]
    assert logits.dtype == torch.float32 and low["kd"].dtype == torch.float32
    assert torch.allclose(plain["ce"], low["ce"])  # the student ran in float32 both times
    assert torch.allclose(plain["kd"], low["kd"], rtol=0.05, atol=1e-3)
    assert not torch.equal(plain["kd"], low["kd"])  # the teacher really ran in bf16


def test_mixup_and_cutmix_batches() -> None:
    """Mixup is the λ-blend of each image with its partner; cutmix pastes one box of the partner and λ is the
    share of the image left; off (or mix_prob 0) leaves the batch and the random stream alone."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16)
    state = torch.get_rng_state()
    assert mix_batch(x, AugmentConfig()) == (x, None)
    assert mix_batch(x, AugmentConfig(mixup=0.4, mix_prob=0.0))[1] is None
    out, mix = mix_batch(x, AugmentConfig(mixup=0.4))
    assert mix is not None and 0.0 <= mix.lam <= 1.0 and sorted(mix.perm.tolist()) == list(range(6))
    assert torch.allclose(out, mix.lam * x + (1 - mix.lam) * x[mix.perm])
    for _ in range(5):
        out, mix = mix_batch(x, AugmentConfig(cutmix=1.0))
        assert mix is not None
        from_other = (out == x[mix.perm]) & (out != x)
        assert abs(from_other[:, 0].float().mean(dim=(1, 2)).max().item() - (1 - mix.lam)) < 1e-6
        assert torch.equal((out == x) | (out == x[mix.perm]), torch.ones_like(out, dtype=torch.bool))
    torch.set_rng_state(state)
    mix_batch(x, AugmentConfig())
    assert torch.equal(torch.get_rng_state(), state)  # off: no random numbers drawn (old runs replay exactly)


def test_mixed_label_term_and_a_mixup_kd_run(tmp_path: Path, tiny) -> None:
    """The label term of a mixed batch is λ·L(y) + (1 − λ)·L(y[perm]) for hard and soft targets; a KD run
    with mixup trains (the online teacher labels the mixed images), and mixup refuses a teacher-logits file."""
    from lightfer.train.config import ConfigError
    from lightfer.train.tasks import SupervisedTask

    torch.manual_seed(0)
    logits, y = torch.randn(8, 7), torch.randint(0, 7, (8,))
    mix = Mix(torch.randperm(8), 0.3)
    task = SupervisedTask(smoothing=0.1)
    want = 0.3 * task.base_loss(logits, y) + 0.7 * task.base_loss(logits, y[mix.perm])
    assert torch.allclose(task.base_loss(logits, y, mix), want)
    soft = torch.softmax(torch.randn(8, 7), 1)
    want = 0.3 * task.base_loss(logits, soft) + 0.7 * task.base_loss(logits, soft[mix.perm])
    assert torch.allclose(task.base_loss(logits, soft, mix), want)
    assert not torch.allclose(task.base_loss(logits, y, mix), task.base_loss(logits, y))

    cfg = _cfg(tmp_path, loss={"task": "kd", "kd_alpha": 0.5}, teacher={"name": "unused_here", "amp": "bf16"},
               augment={"mixup": 0.4, "cutmix": 1.0}, epochs=1)
    main(cfg, model=tiny(), teacher=tiny(width=12))
    row = _rows(tmp_path)[0]
    assert float(row["train_loss_kd"]) > 0 and float(row["train_loss_ce"]) > 0
    with pytest.raises(ConfigError, match="unmixed"):
        _cfg(tmp_path, loss={"task": "kd"}, teacher={"name": "t", "logits_file": "x.pt"}, augment={"mixup": 0.2})


def test_flip_tta_validation_scores_as_the_shipped_models_serve(tmp_path: Path, tiny) -> None:
    """``evaluate(tta_flip=True)`` = accuracy and NLL of the mean of a crop's and its mirror's probabilities, and
    ``val_tta_flip`` makes the run's ``val_acc`` (and so ``best.pt``) that score."""
    from lightfer.train.data import build_datasets
    from lightfer.train.engine import evaluate

    torch.manual_seed(0)
    model = tiny().eval()
    ds = SyntheticFER(96, seed=1)
    x = torch.stack([ds[i][0] for i in range(96)])
    y = torch.tensor([ds[i][1] for i in range(96)])
    loader = [(torch.arange(48), x[:48], y[:48]), (torch.arange(48, 96), x[48:], y[48:])]
    prep = lambda t: to_model_input(t, 32, 1, (0.5,), (0.5,))  # noqa: E731
    with torch.no_grad():
        p = (model(prep(x)).softmax(1) + model(prep(x).flip(-1)).softmax(1)) / 2
    plain = evaluate(model, loader, torch.device("cpu"), 7, prep=prep)
    flip = evaluate(model, loader, torch.device("cpu"), 7, prep=prep, tta_flip=True)
    assert flip["acc"] == pytest.approx((p.argmax(1) == y).float().mean().item())
    assert flip["loss"] == pytest.approx(torch.nn.functional.nll_loss(p.log(), y).item(), rel=1e-5)
    assert flip["loss"] != pytest.approx(plain["loss"])
    assert sum(map(sum, flip["confusion"])) == 96

    cfg = _cfg(tmp_path, val_tta_flip=True)
    main(cfg, model=tiny())
    best = load_checkpoint(tmp_path / "best.pt")
    scored = tiny()
    scored.load_state_dict(best["model"])
    _, val_ds = build_datasets(cfg.data, seed=cfg.seed)
    vx = torch.stack([val_ds[i][0] for i in range(len(val_ds))])
    vy = torch.tensor([int(val_ds[i][1]) for i in range(len(val_ds))])
    ev = evaluate(scored, [(torch.arange(len(vy)), vx, vy)], torch.device("cpu"), 7,
                  prep=lambda t: to_model_input(t, 32, 1, (0.5,), (0.5,)), tta_flip=True)
    row = _rows(tmp_path)[best["best"]["epoch"] - 1]
    assert best["best"]["acc"] == pytest.approx(ev["acc"]) and float(row["val_acc"]) == pytest.approx(ev["acc"])
    assert float(row["val_loss"]) == pytest.approx(ev["loss"], rel=1e-5)  # the loss tells TTA from plain apart


def test_ensemble_teacher_is_the_mean_probability_of_its_members_each_on_its_own_input() -> None:
    """``teacher.name: a+b`` (pretrained) is the log mean probability of the shipped models named, each member fed
    the input re-normalised to its own statistics (dlib 0.46 / 1.0 vs the ShuffleNet's 0.5 / 0.5); the data's classes
    must be the members'; a checkpoint, kwargs or members of other label sets are refused."""
    from lightfer.data.labels import FERPLUS_CLASSES
    from lightfer.models import create_model
    from lightfer.train.builders import build_teacher
    from lightfer.train.config import TrainConfig

    names = ["dlib_resnet_face_ferplus", "shufflenet_v2_x0_5_ferplus"]
    cfg = TrainConfig()
    cfg.teacher.name, cfg.teacher.pretrained = "+".join(names), True
    teacher = build_teacher(cfg, tuple(FERPLUS_CLASSES))
    assert teacher.pretrained_cfg.classes == tuple(FERPLUS_CLASSES)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    raw = torch.rand(3, 1, 64, 64)
    probs = []
    for name in names:
        net = create_model(name, pretrained=True).eval()
        pc = net.pretrained_cfg
        with torch.no_grad():
            probs.append(net(to_model_input(raw, 64, 1, pc.mean, pc.std)).softmax(-1))
    pc = teacher.pretrained_cfg  # the first member's statistics
    with torch.no_grad():
        got = teacher(to_model_input(raw, 64, 1, pc.mean, pc.std))
    torch.testing.assert_close(got, torch.stack(probs).mean(0).log(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, probs[0].log(), atol=1e-2)  # both members count

    with pytest.raises(ValueError, match="predicts"):
        build_teacher(cfg, SyntheticFER(1).classes)
    cfg.teacher.checkpoint = "runs/x/best.pt"
    with pytest.raises(ValueError, match="ensemble teacher .*no checkpoint"):
        build_teacher(cfg, tuple(FERPLUS_CLASSES))
    cfg.teacher.checkpoint, cfg.teacher.name = None, "shufflenet_v2_x0_5_ferplus+shufflenet_v2_x0_5_fer2013"
    with pytest.raises(ValueError, match="shufflenet_v2_x0_5_fer2013.*differs .* in classes"):
        build_teacher(cfg, tuple(FERPLUS_CLASSES))


def test_resumed_fpdls_run_reads_its_prior_instead_of_asking_the_teacher(tmp_path: Path, tiny, caplog) -> None:
    """A confusion prior is computed once (a pass of the teacher over the training set); --resume reads the run's
    fpdls_prior.txt, keeps it as written, and still continues bit for bit."""
    def teacher() -> torch.nn.Module:
        torch.manual_seed(7)
        return tiny(width=12)

    over = dict(loss={"fpdls": True, "fpdls_prior": "confusion"}, epochs=2,
                teacher={"name": "no_such_teacher_model"})  # building it would fail: only a passed teacher works
    torch.manual_seed(0)
    main(_cfg(tmp_path / "straight", **over), model=tiny(), teacher=teacher())
    torch.manual_seed(0)
    cfg = _cfg(tmp_path / "split", **over)
    main(cfg, model=tiny(), teacher=teacher(), stop_after=1)
    written = (tmp_path / "split" / "fpdls_prior.txt").read_text()
    assert "F-PDLS prior (confusion)" in written
    with caplog.at_level(logging.INFO, logger="lightfer"):
        assert main(cfg, model=tiny(), resume=True)["last"]["epoch"] == 2  # no teacher passed, none built
    assert "resuming with the F-PDLS prior the run wrote" in caplog.text
    assert (tmp_path / "split" / "fpdls_prior.txt").read_text() == written
    assert cfg.loss.fpdls_prior == "confusion"  # the caller's config is not changed
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_log_grad_norm_writes_each_epochs_spike_and_median(tmp_path: Path, tiny) -> None:
    torch.manual_seed(0)
    # 60 images at 16: three full batches and a final one of 12; clipping to 1e-3 does not change what is logged
    main(_cfg(tmp_path, epochs=2, batch_size=16, log_grad_norm=True, data__synthetic_size=60,
              optim={"name": "sgd", "lr": 0.05, "clip_grad": 1e-3}), model=tiny())
    rows = _rows(tmp_path)
    assert len(rows) == 2
    for r in rows:
        top, mid = float(r["train_grad_norm_max"]), float(r["train_grad_norm_median"])
        assert top >= mid > 1e-3  # the norm before clipping
        assert int(r["train_grad_norm_max_step"]) in range(4) and r["train_grad_norm_nonfinite"] == "0"
    main(_cfg(tmp_path / "plain", epochs=1, data__synthetic_size=60), model=tiny())
    assert "train_grad_norm_max" not in _rows(tmp_path / "plain")[0]  # off by default


def test_norm_stats_skip_nonfinite_steps() -> None:
    from lightfer.train.engine import _norm_stats

    got = _norm_stats(torch.tensor([1.0, float("inf"), 3.0, 2.0, float("nan")]))
    assert got == {"grad_norm_max": 3.0, "grad_norm_median": 2.0, "grad_norm_max_step": 2, "grad_norm_nonfinite": 2}
    assert _norm_stats(torch.tensor([float("inf")]))["grad_norm_max_step"] == -1


def test_csv_log_takes_new_columns_on_resume(tmp_path: Path) -> None:
    from lightfer.train.engine import _CsvLog

    path = tmp_path / "log.csv"
    log = _CsvLog(path, None)
    log.write({"epoch": 1, "loss": 0.5})
    log.write({"epoch": 2, "loss": 0.4})
    log = _CsvLog(path, 1)  # resumed after epoch 1 with an option that adds a column
    log.write({"epoch": 2, "loss": 0.3, "grad": 7.0})
    log.write({"epoch": 3, "loss": 0.2})  # and one without it again
    assert _rows(tmp_path) == [{"epoch": "1", "loss": "0.5", "grad": ""}, {"epoch": "2", "loss": "0.3", "grad": "7.0"},
                               {"epoch": "3", "loss": "0.2", "grad": ""}]


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture, native: bool) -> None:
    """A teacher asked to run in bf16 on a CPU without hardware bf16 trains as asked but warns, naming the key to
    change (session 54: a bf16 teacher pair was 5x slower than float32 on an AVX2-only CPU); a CPU with it does not."""
    import lightfer.train.engine as engine

    monkeypatch.setattr(engine, "cpu_bf16_native", lambda: native)
    cfg = _cfg(tmp_path, loss={"task": "kd", "kd_alpha": 0.5}, teacher={"name": "unused_here", "amp": "bf16"},
               epochs=1, data={"synthetic_size": 64})
    with caplog.at_level(logging.WARNING, logger="lightfer.train.engine"):
        main(cfg, model=tiny(), teacher=tiny(width=12))
    assert _rows(tmp_path)[0]["epoch"] == "1"
    assert ("teacher.amp: bf16 on this CPU" in caplog.text and "set teacher.amp=none" in caplog.text) is not native
    assert "amp and teacher.amp" not in caplog.text  # the student's own amp stayed none
