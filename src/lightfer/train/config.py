"""Typed training configuration: dataclasses + YAML + ``--set key=value`` overrides.

Unknown keys are errors (in YAML and in overrides); the resolved config is written next to the
checkpoints as ``config.yaml`` so every run can be repeated exactly.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TrainConfig", "load_config", "apply_overrides", "config_to_dict", "config_from_dict", "ConfigError"]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    spec: str = "synthetic"  # "synthetic" or a lightfer.data spec, e.g. "fer2013:data/fer2013.csv.gz"
    train_split: str = "train"  # split read for training
    val_split: str | None = "val"  # split for validation / best-by-val (None: no validation)
    target: str = "hard"  # "hard" labels or "soft" label distributions (FERPlus votes)
    balance: str | None = None  # "augment": add augmented minority-class copies (seed 003)
    normalize: bool = True  # images come in [0, 1]: augment, resize and normalise with the model's mean/std
    num_workers: int = 0  # DataLoader workers (not used with in_memory)
    in_memory: bool = False  # hold each split as tensors on the training device and index batches from them: the
    #   loader's very batches without per-item work, workers or copies (GPU runs); needs items without random transforms
    drop_last: bool = False  # training: skip each epoch's final partial batch (its samples change with the shuffle).
    #   A tiny final batch (FER2013's 28,558 at 128: 14 images) gives batch-norm a noisy batch; session 51's 100-epoch
    #   KD + MD run collapsed on one (gradient norm ~20x its neighbours'). Off by default: the recorded recipes keep
    #   their steps; a split smaller than one batch is never dropped
    limit_train: int | None = None  # use only the first N training samples (smoke runs)
    limit_val: int | None = None  # use only the first N validation samples
    synthetic_size: int = 512  # synthetic: training samples (validation gets half)
    synthetic_image: int = 32  # synthetic: image side, px
    synthetic_noise: float = 0.25  # synthetic: noise std on [0, 1] images
    synthetic_classes: int = 7  # synthetic: number of classes
    synthetic_channels: int = 1  # synthetic: 1 (gray) or 3 (RGB)


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip
    crop_pad: int = 0  # random crop after zero padding by this many px (0: off)
    rotate: float = 0.0  # max rotation, degrees
    erase: float = 0.0  # probability of random erasing
    noise: float = 0.0  # probability of Gaussian pixel noise (robustness to noisy photos; 0: off)
    noise_std: float = 0.06  # its standard deviation is drawn per image from [0, noise_std] (images in [0, 1])
    # batch mixing after the above (Zhang et al. 2018; Yun et al. 2019): one λ ~ Beta(a, a) per batch, images mixed
    # with a shuffled copy of the batch, the label term mixed by λ; an online teacher labels the mixed image itself
    mixup: float = 0.0  # mixup's Beta a (0: off)
    cutmix: float = 0.0  # cutmix's Beta a (0: off); with both set, each mixed batch picks one at random
    mix_prob: float = 1.0  # probability that a batch is mixed


@dataclass
class ModelConfig:
    name: str = "fer_mini_xception"  # registered model (lightfer.models.list_models())
    num_classes: int | None = None  # default: the dataset's classes
    in_chans: int | None = None  # default: the model's pretrained config
    input_size: int | None = None  # default: the model's pretrained config
    pretrained: bool = False  # start from the registered weights
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra entrypoint arguments (resizer, se_head, drop_rate…)
    # start from this checkpoint's weights (its EMA; PATH@live: live), not its optimizer; or from a registered
    # pretrained model by name (e.g. a shipped model: its classifier rows are matched to this data's classes by name)
    init_checkpoint: str | None = None


@dataclass
class TeacherConfig:
    name: str | None = None  # registered teacher model (kd / manifold tasks)
    checkpoint: str | None = None  # lightfer checkpoint (its EMA; PATH@live: its live weights) or a state dict
    pretrained: bool = False  # no checkpoint: the registered weights (a shipped model, or a fetched baseline)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra entrypoint arguments
    input_size: int | None = None  # teacher input side (default: its pretrained config)
    in_chans: int | None = None  # teacher channels (default: its pretrained config)
    logits_file: str | None = None  # kd: precompute teacher logits once to this file and reuse them
    tta_flip: bool = False  # kd logits file: average the teacher over the horizontal mirror (log mean prob)
    # online teacher (no logits file): autocast its forward alone — bf16 halves a CNN teacher's cost on a CPU with
    # AVX512-BF16 while the student keeps the top-level ``amp`` (a small student is slower in bf16 there)
    amp: str = "none"  # none | bf16 | fp16 (fp16 only on CUDA)


@dataclass
class LossConfig:
    task: str = "supervised"  # supervised | kd | manifold
    smoothing: float = 0.0  # label smoothing ε of the CE term
    kd_temperature: float = 4.0  # T
    kd_alpha: float = 0.5  # α: weight of the KD term (1 − α on CE)
    md_beta: float = 1.0  # β: weight of manifold distillation
    md_lambda_intra: float = 1.0  # λ_intra
    md_lambda_inter: float = 1.0  # λ_inter
    md_lambda_rand: float = 1.0  # λ_rand
    md_samples: int = 192  # K of the random-sampled loss
    md_chunk: int = 256  # rows per chunk of the relation maps
    md_layers: list[list[str]] = field(default_factory=list)  # [[student_module, teacher_module], …]
    md_layout: str = "auto"  # token layout of hooked features: auto | nlc | nchw | nhwc
    md_teacher_layout: str | None = None  # the teacher's, when it differs (a CNN teacher of a Swin student); None: md_layout
    md_grids: list[int] = field(default_factory=list)  # per pair: pool both to g x g tokens; []: finer to coarser
    fpdls: bool = False  # use (F-)PDLS instead of CE for the hard-label term
    fpdls_alpha: float = 0.9  # α of PDLS (weight of the one-hot target)
    fpdls_gamma: float = 2.0  # γ focal exponent (0: PDLS)
    fpdls_prior: str = "uniform"  # uniform | votes | confusion | file:PATH (.npy/.pt/.txt (C, C) matrix)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01  # base learning rate
    weight_decay: float = 1e-4  # decoupled for adamw, L2 for sgd
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = False  # sgd Nesterov momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw betas
    sam: bool = False  # wrap in sharpness-aware minimization
    sam_rho: float = 0.05  # SAM radius ρ
    sam_adaptive: bool = False  # ASAM
    clip_grad: float | None = None  # max gradient norm (None: off)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | step | plateau | none
    warmup_epochs: float = 0.0  # cosine: linear warm-up length
    min_lr_factor: float = 0.0  # cosine: final lr / base lr
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step / plateau: decay factor
    patience: int = 3  # plateau: epochs without improvement
    plateau_metric: str = "val_loss"  # plateau: val_loss (min) or val_acc (max)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10  # training epochs
    batch_size: int = 128  # per process
    eval_batch_size: int | None = None  # default: 2 × batch_size
    seed: int = 0  # seeds python, numpy, torch and the sampler
    output_dir: str = "runs/train"  # checkpoints, config.yaml, log.csv
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 | fp16 (fp16 only on CUDA)
    channels_last: bool = False  # channels-last memory format (CUDA; on CPU it sped up narrow convs, docs/training.md)
    ema_decay: float | None = None  # EMA of weights (e.g. 0.999); validation then uses the EMA
    val_tta_flip: bool = False  # validate (and pick best.pt) with flip TTA, as the shipped models serve
    progress: bool = True  # tqdm progress bar
    log_grad_norm: bool = False  # log.csv gets each epoch's largest and median gradient norm (before any clipping)
    #   and the step of the largest: a spike, e.g. on a small final batch (data.drop_last), shows there
    tensorboard: bool = False  # also log to TensorBoard if it is installed
    save_every: int = 1  # write last.pt every N epochs
    deterministic: bool = False  # torch.use_deterministic_algorithms


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the field type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in d.items()}
    return cls(**kwargs)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping (unknown keys raise)."""
    cfg = _from_dict(TrainConfig, d or {})
    validate(cfg)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain-dict view (YAML-serialisable)."""
    return dataclasses.asdict(cfg)


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe, apply ``--set`` overrides, validate."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    apply_overrides(d, list(overrides or []))
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path or '<overrides>'}: {e}") from e


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


_MD_LAYOUTS = ("auto", "nlc", "nchw", "nhwc")  # token layouts of hooked features (losses.manifold.to_tokens)
_CHOICES = {
    ("loss", "task"): ("supervised", "kd", "manifold"),
    ("data", "target"): ("hard", "soft"),
    ("optim", "name"): ("sgd", "adamw"),
    ("schedule", "name"): ("cosine", "step", "plateau", "none"),
    ("schedule", "plateau_metric"): ("val_loss", "val_acc"),
    ("loss", "md_layout"): _MD_LAYOUTS,
    ("loss", "md_teacher_layout"): (*_MD_LAYOUTS, None),
}


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks with messages that name the key."""
    for (sec, key), choices in _CHOICES.items():
        val = getattr(getattr(cfg, sec), key)
        if val not in choices:
            raise ConfigError(f"{sec}.{key} = {val!r}; choose one of {', '.join(map(str, choices))}")
    for key, val in (("amp", cfg.amp), ("teacher.amp", cfg.teacher.amp)):
        if val not in ("none", "bf16", "fp16"):
            raise ConfigError(f"{key} = {val!r}; choose none, bf16 or fp16")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("epochs and batch_size must be >= 1")
    if cfg.loss.task in ("kd", "manifold") and not cfg.teacher.name and not (
            cfg.loss.task == "kd" and cfg.teacher.logits_file):  # a written logits file needs no teacher
        raise ConfigError(f"loss.task = {cfg.loss.task} needs teacher.name"
                          + (" (or teacher.logits_file)" if cfg.loss.task == "kd" else ""))
    if cfg.loss.task == "manifold" and not cfg.loss.md_layers:
        raise ConfigError("loss.task = manifold needs loss.md_layers: [[student_module, teacher_module], ...]")
    for pair in cfg.loss.md_layers:
        if len(pair) != 2:
            raise ConfigError(f"loss.md_layers entries are [student_module, teacher_module], got {pair}")
    grids = cfg.loss.md_grids
    if grids and (len(grids) != len(cfg.loss.md_layers) or not all(isinstance(g, int) and g >= 1 for g in grids)):
        raise ConfigError(f"loss.md_grids = {grids}: one positive integer per loss.md_layers pair "
                          f"({len(cfg.loss.md_layers)}), or [] to pool the finer grid to the coarser")
    a = cfg.augment
    if min(a.mixup, a.cutmix) < 0 or not 0.0 <= a.mix_prob <= 1.0:
        raise ConfigError("augment.mixup / augment.cutmix must be >= 0 and augment.mix_prob in [0, 1]")
    if (a.mixup > 0 or a.cutmix > 0) and cfg.loss.task != "supervised" and cfg.teacher.logits_file:
        raise ConfigError("augment.mixup / augment.cutmix with teacher.logits_file: the file holds the teacher's "
                          "logits of the unmixed images; drop the file so the teacher labels the mixed batch online")
    if cfg.loss.fpdls and cfg.data.target == "soft":
        raise ConfigError("loss.fpdls needs hard labels (data.target = hard)")
    if not (cfg.loss.fpdls_prior in ("uniform", "votes", "confusion") or cfg.loss.fpdls_prior.startswith("file:")):
        raise ConfigError(f"loss.fpdls_prior = {cfg.loss.fpdls_prior!r}; choose uniform, votes, confusion or file:PATH")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
