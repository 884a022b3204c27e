"""Config schema: YAML + overrides, strict keys and types, and every shipped recipe runs (wired, tiny)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightfer.models import list_models
from lightfer.train import main
from lightfer.train.config import ConfigError, apply_overrides, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def test_overrides_parse_yaml_values_and_nest(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 0.5}\nepochs: 3\n")
    cfg = load_config(p, ["optim.lr=1e-3", "loss.md_layers=[[a, b]]", "data.val_split=null", "optim.sam=true"])
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.epochs == 3
    assert cfg.loss.md_layers == [["a", "b"]] and cfg.data.val_split is None and cfg.optim.sam is True
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("bad, match", [
    ({"optim": {"lrr": 1}}, "unknown key.*optim.lrr"),
    ({"epochz": 1}, "unknown key.*epochz"),
    ({"epochs": "ten"}, "epochs: expected an integer"),
    ({"optim": {"sam": "yes"}}, "optim.sam: expected true/false"),
    ({"loss": {"task": "magic"}}, "loss.task"),
    ({"loss": {"task": "kd"}}, "needs teacher.name"),
    ({"loss": {"task": "manifold"}, "teacher": {"name": "t"}}, "md_layers"),
    ({"loss": {"md_layers": [["only_one"]]}}, "md_layers entries"),
    ({"loss": {"md_teacher_layout": "chw"}}, "md_teacher_layout"),
    ({"amp": "fp8"}, "amp"),
    ({"loss": {"fpdls": True}, "data": {"target": "soft"}}, "hard labels"),
    ({"loss": {"fpdls_prior": "teacher"}}, "fpdls_prior"),
    ({"data": []}, "data: expected a mapping"),
])
def test_bad_configs_name_the_key(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(bad)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["epochs"])


def test_shipped_recipes_load_and_name_registered_models() -> None:
    assert {p.name for p in RECIPES} >= {"smoke.yaml", "seed001_teacher.yaml", "seed001_kd.yaml",
                                         "seed003_swin_se_sam.yaml"}
    models = set(list_models())
    for p in RECIPES:
        cfg = load_config(p)
        assert cfg.model.name in models, p
        assert cfg.teacher.name is None or cfg.teacher.name in models, p
    kd = load_config(REPO / "configs" / "seed001_kd.yaml")
    assert (kd.loss.kd_temperature, kd.loss.kd_alpha, kd.optim.lr, kd.schedule.name) == (8.0, 0.4, 0.01, "plateau")
    se = load_config(REPO / "configs" / "seed003_swin_se_sam.yaml")
    assert se.optim.sam and se.schedule.name == "step" and se.schedule.step_size == 10


@pytest.mark.parametrize("recipe", [p.name for p in RECIPES])
def test_every_recipe_runs_one_tiny_epoch(recipe: str, tmp_path: Path) -> None:
    over = ["data.spec=synthetic", "data.synthetic_size=4", "data.val_split=null", "data.synthetic_image=24", "batch_size=4",
            "epochs=1", "progress=false", f"output_dir={tmp_path}", "data.num_workers=0", "data.balance=null",
            "device=cpu",  # the *_gpu recipes name cuda
            "teacher.checkpoint=null", "teacher.pretrained=false",  # synthetic classes: no shipped teacher fits
            "model.init_checkpoint=null",  # start weights are a run's input (e.g. dlib's trunk carried to a GPU)
            f"teacher.logits_file={tmp_path / 'logits.pt'}"]
    cfg = load_config(REPO / "configs" / recipe, over)
    if cfg.loss.fpdls_prior == "votes":  # synthetic data carries no annotator votes
        cfg.loss.fpdls_prior = "uniform"
    if cfg.teacher.name is None:
        cfg.teacher.logits_file = None
    for m in (cfg.model, cfg.teacher):  # shallow Swins keep the wiring (stage names, heads) and run fast
        if m.name and m.name.startswith("swinv2"):
            m.kwargs = {**m.kwargs, "depths": (1, 1, 1, 1)}
    torch.manual_seed(0)
    res = main(cfg)
    assert res["last"]["epoch"] == 1
    assert (tmp_path / "last.pt").is_file()
