"""Config schema: YAML + overrides, strict keys and types, and every shipped recipe runs (wired, tiny)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightfer.models import list_models
from lightfer.models.shipped import RETIRED
from lightfer.train import main
from lightfer.train.checkpoint import save_checkpoint
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
    ({"loss": {"task": "kd"}}, r"needs teacher.name \(or teacher.logits_file\)"),
    ({"loss": {"task": "manifold"}, "teacher": {"logits_file": "t.pt"}}, "manifold needs teacher.name$"),
    ({"loss": {"task": "manifold"}, "teacher": {"name": "t"}}, "md_layers"),
    ({"loss": {"md_layers": [["only_one"]]}}, "md_layers entries"),
    ({"loss": {"md_teacher_layout": "chw"}}, "md_teacher_layout"),
    ({"loss": {"md_layers": [["a", "b"]], "md_grids": [4, 2]}}, "md_grids"),
    ({"loss": {"md_layers": [["a", "b"]], "md_grids": [0]}}, "md_grids"),
    ({"amp": "fp8"}, "amp"),
    ({"teacher": {"amp": "int8"}}, "teacher.amp"),
    ({"augment": {"mixup": -1.0}}, "augment.mixup"),
    ({"augment": {"mix_prob": 2.0}}, "mix_prob"),
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
        # a recipe of a teacher retired from the package names it still (its files restore from git)
        # an ensemble teacher (`a+b`) names each member
        assert cfg.teacher.name is None or set(cfg.teacher.name.split("+")) <= models | set(RETIRED), p
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
            "model.init_checkpoint=null"]  # start weights are a run's input (e.g. dlib's trunk carried to a GPU)
    aug = load_config(REPO / "configs" / recipe, over).augment
    if not (aug.mixup > 0 or aug.cutmix > 0):  # a mixing recipe's teacher labels the mixed batch online
        over.append(f"teacher.logits_file={tmp_path / 'logits.pt'}")
    cfg = load_config(REPO / "configs" / recipe, over)
    if cfg.loss.fpdls_prior == "votes":  # synthetic data carries no annotator votes
        cfg.loss.fpdls_prior = "uniform"
    if cfg.teacher.name is None and cfg.loss.task == "kd":  # a written file is the teacher (scripts/vote_targets.py)
        save_checkpoint({"logits": torch.randn(4, 7).log_softmax(1)}, tmp_path / "logits.pt")
    elif cfg.teacher.name is None:
        cfg.teacher.logits_file = None
    if cfg.teacher.name and "+" in cfg.teacher.name:  # an ensemble teacher needs its members' weights: its first
        cfg.teacher.name = cfg.teacher.name.split("+")[0]  # member's architecture stands in, as for other teachers
    if cfg.teacher.name in RETIRED:  # a retired teacher's architecture is its successor's
        cfg.teacher.name = RETIRED[cfg.teacher.name]
    for m in (cfg.model, cfg.teacher):  # shallow Swins keep the wiring (stage names, heads) and run fast
        if m.name and m.name.startswith("swinv2"):
            m.kwargs = {**m.kwargs, "depths": (1, 1, 1, 1)}
    torch.manual_seed(0)
    res = main(cfg)
    assert res["last"]["epoch"] == 1
    assert (tmp_path / "last.pt").is_file()


def test_init_from_a_shipped_model_of_other_classes_matches_classifier_rows_by_name() -> None:
    """model.init_checkpoint may name a shipped model: an 8-class FER+ network takes every weight of the 7-class
    FER2013 one, its classifier rows by class name (so the shared classes' logits are the same), and `contempt`
    keeps its fresh row; a model the weights do not fit is refused."""
    from lightfer.data.labels import FERPLUS_CLASSES
    from lightfer.models import create_model
    from lightfer.train.builders import init_weights

    src = create_model("shufflenet_v2_x0_5_fer2013", pretrained=True).eval()
    model = create_model("shufflenet_v2_x0_5", classes=FERPLUS_CLASSES)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(model, "shufflenet_v2_x0_5_fer2013", FERPLUS_CLASSES)
    model.eval()
    x = torch.rand(3, 1, 64, 64)
    order = [src.pretrained_cfg.classes.index(c) for c in FERPLUS_CLASSES[:7]]
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :7], src(x)[:, order])
    head = [k for k, v in model.state_dict().items() if v.shape[:1] == (8,)]
    assert head and all(torch.equal(model.state_dict()[k][7], fresh[k][7]) for k in head)  # contempt untouched
    with pytest.raises(ValueError, match=r"is \(24, 24, 1, 1\), the model.s \(58"):
        init_weights(create_model("shufflenet_v2_x1_0", classes=FERPLUS_CLASSES), "shufflenet_v2_x0_5_fer2013",
                     FERPLUS_CLASSES)


def test_init_a_resizer_model_from_a_plain_backbone(tmp_path: Path) -> None:
    """A Neural-Resizer student (48 px in) may start from a shipped 64 px model or a plain run's weights: the backbone
    takes them, so on an upsampled face the new model answers as the start model while the resizer is near bilinear."""
    import torch.nn.functional as F

    from lightfer.models import create_model
    from lightfer.train.builders import init_weights

    src = create_model("shufflenet_v2_x0_5_fer2013", pretrained=True).eval()
    classes = tuple(src.pretrained_cfg.classes)
    spec = {"in_size": 48, "filters": 4, "scale": 1.0, "blocks": 0}
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        want = src(F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    for start in ("shufflenet_v2_x0_5_fer2013", str(tmp_path / "plain.pt")):
        model = create_model("shufflenet_v2_x0_5", classes=classes, input_size=64, resizer=spec)
        before = {k: v.clone() for k, v in model.resizer.state_dict().items()}
        init_weights(model, start, classes)
        model.eval()
        assert all(torch.equal(v, before[k]) for k, v in model.resizer.state_dict().items())
        with torch.no_grad():
            torch.testing.assert_close(model(x), want, atol=0.05, rtol=0)  # the resizer's residual is ~1e-3
