"""Pieces the trainer assembles from a :class:`~lightfer.train.config.TrainConfig`: student and
teacher models, the hard-label criterion (CE or F-PDLS with its prior), the task, an EMA of the
weights, and precomputed teacher logits."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightfer.losses import FPDLSLoss, ManifoldDistillation, prior_from_confusion, prior_from_votes, uniform_prior
from lightfer.losses.fpdls import confusion_matrix
from lightfer.train.config import TrainConfig
from lightfer.train.data import Indexed, split_batch, to_model_input
from lightfer.train.tasks import DistillationTask, SupervisedTask, amp_dtype

log = logging.getLogger(__name__)

__all__ = ["build_model", "init_weights", "build_teacher", "build_criterion", "build_task", "ModelEma",
           "teacher_logits_table", "model_input_fn"]


def build_model(cfg: TrainConfig, classes: tuple[str, ...]) -> nn.Module:
    """The student, created by registered name with the dataset's classes."""
    from lightfer.models import create_model

    m = cfg.model
    if m.num_classes is not None and m.num_classes != len(classes):
        raise ValueError(f"model.num_classes = {m.num_classes} but the dataset has {len(classes)} classes")
    model = create_model(m.name, pretrained=m.pretrained, classes=None if m.pretrained else classes,
                         in_chans=m.in_chans, input_size=m.input_size, **m.kwargs)
    if m.init_checkpoint:
        init_weights(model, m.init_checkpoint, classes)
    return model


def init_weights(model: nn.Module, spec: str, classes: tuple[str, ...]) -> None:
    """Load start weights into ``model`` (built for ``classes``): a checkpoint (:func:`_state_dict_from`) or, when
    ``spec`` is not a file, the registered pretrained model of that name (e.g. ``dlib_resnet_face_fer2013``).
    A pretrained model of other classes (FER2013's 7 for an 8-class FER+ run) gives its classifier rows to the
    classes of the same name; the rest (``contempt``) keep their fresh initialisation. A model wrapped with a Neural
    Resizer (``model.kwargs.resizer``) takes a plain backbone's weights into its backbone, its resizer keeping the
    near-bilinear start. A model with MobileOne-style branches (``model.kwargs.rep``) takes plain weights into its
    first branches, the others starting silent (:func:`~lightfer.models.rep.load_plain_state`); a branched run's own
    checkpoint loads as it is. Raises ``ValueError`` when a tensor does not fit and cannot be matched that way."""
    from lightfer.models import create_model, list_models
    from lightfer.models.rep import has_branches, load_plain_state, reparameterize
    from lightfer.models.resizer import ResizedModel
    from lightfer.models.shipped import retired_note

    is_file = Path(spec.split("@")[0]).exists()
    if not is_file and (note := retired_note(spec)):
        raise ValueError(f"init_checkpoint: {note}")
    if has_branches(model):  # a ``rep`` model: plain start weights go into a folded twin, then into the first branches
        state = _state_dict_from(spec) if is_file else {}
        if any(".convs.0.0." in k for k in state):
            model.load_state_dict(state)  # a branched run's own checkpoint
            return
        twin = copy.deepcopy(model).eval()
        reparameterize(twin)
        if is_file:
            _load_file_state(twin, state, spec)  # the file read above, not read again
        else:
            init_weights(twin, spec, classes)
        load_plain_state(model, twin.state_dict())
        log.info("start weights: %s into the first branches; the other branches start silent", spec)
        return
    if is_file or spec not in list_models(pretrained=True):
        _load_file_state(model, _state_dict_from(spec), spec)
        return
    if isinstance(model, ResizedModel):
        init_weights(model.backbone, spec, classes)
        log.info("the resizer starts near bilinear; its backbone from %s", spec)
        return
    src_model = create_model(spec, pretrained=True)
    src_classes = tuple(src_model.pretrained_cfg.classes)
    src = src_model.state_dict()
    own = model.state_dict()
    if set(src) != set(own):
        raise ValueError(f"init_checkpoint {spec!r}: its weights do not fit {type(model).__name__} "
                         f"(keys differ: {sorted(set(src) ^ set(own))[:4]})")
    shared = [(i, src_classes.index(c)) for i, c in enumerate(classes) if c in src_classes]
    head = next(reversed(src)).rsplit(".", 1)[0]  # the classifier: the module registered last
    with torch.no_grad():
        for key, t in own.items():
            s = src[key].to(t.dtype)
            by_class = key.rsplit(".", 1)[0] == head and s.shape[:1] == (len(src_classes),)
            if not by_class and s.shape == t.shape:
                t.copy_(s)
            elif by_class and t.shape[:1] == (len(classes),) and s.shape[1:] == t.shape[1:]:
                for i, j in shared:
                    t[i].copy_(s[j])
            else:
                raise ValueError(f"init_checkpoint {spec!r}: {key} is {tuple(s.shape)}, the model's {tuple(t.shape)}")
    log.info("start weights: %s (%d of %d classes' classifier rows matched by name)", spec, len(shared), len(classes))


def _load_file_state(model: nn.Module, state: dict[str, torch.Tensor], spec: str) -> None:
    """Load a checkpoint's weights (read from ``spec``) into ``model``; a plain backbone's weights go into the
    backbone of a model wrapped with a Neural Resizer, its resizer keeping the near-bilinear start."""
    from lightfer.models.resizer import ResizedModel

    if isinstance(model, ResizedModel) and not any(k.startswith("resizer.") for k in state):
        model.backbone.load_state_dict(state)
        log.info("start weights: %s into the backbone; the resizer starts near bilinear", spec)
    else:
        model.load_state_dict(state)


def _state_dict_from(spec: str) -> dict[str, torch.Tensor]:
    """Weights of ``path`` (a lightfer run's EMA when it has one, as its validation used), ``path@live`` (the run's
    live weights) or ``path@ema``; a plain state dict is taken as it is."""
    from lightfer.models.shipped import split_member
    from lightfer.train.checkpoint import CheckpointError, load_checkpoint

    path, which = split_member(spec)
    obj = load_checkpoint(path)
    if which == "live" and not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path}: @live asks for a lightfer run's live weights; this file has none")
    if which == "ema" and not isinstance(obj.get("ema"), dict):
        raise CheckpointError(f"{path}: @ema asks for a lightfer run's EMA weights; this file has none")
    if isinstance(obj.get("ema"), dict) and which != "live":  # a run with EMA: validation (and best.pt) used the EMA
        obj = obj["ema"]
    elif isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither a lightfer checkpoint nor a state dict")
    return obj


def build_teacher(cfg: TrainConfig, classes: tuple[str, ...]) -> nn.Module:
    """The frozen teacher in eval mode, weights from ``teacher.checkpoint`` or, with ``teacher.pretrained``,
    the registered weights (e.g. a shipped lightfer model: born-again distillation); its BatchNorm layers are
    folded into the convolutions before them (:func:`~lightfer.models.fold.fold_batchnorm`; same outputs, faster).

    ``teacher.name: a+b[+c]`` with ``pretrained: true`` is an ensemble teacher: the probability average of the
    shipped models / checkpoints named (the ensemble member syntax, :func:`lightfer.models.shipped.ensemble_of`),
    ``(B, C, S, S)`` normalised as the first member -> ``(B, K)`` log mean probability; no ensemble is shipped."""
    from lightfer.models import create_model

    t = cfg.teacher
    assert t.name is not None
    if "+" in t.name:  # an ensemble teacher assembled here from shipped models / checkpoints
        from lightfer.models.shipped import ensemble_of

        if not t.pretrained or t.checkpoint or t.kwargs or t.input_size or t.in_chans:
            raise ValueError(f"ensemble teacher {t.name!r}: give pretrained: true and no checkpoint, kwargs, "
                             "input_size or in_chans (each member keeps its own weights and input)")
        teacher, _ = ensemble_of([m.strip() for m in t.name.split("+")])
    elif t.pretrained and not t.checkpoint:
        teacher = create_model(t.name, pretrained=True, in_chans=t.in_chans, input_size=t.input_size, **t.kwargs)
    if t.pretrained and not t.checkpoint:
        own = tuple(teacher.pretrained_cfg.classes)
        if own != tuple(classes):
            raise ValueError(f"pretrained teacher {t.name!r} predicts {own}, the data has {tuple(classes)}: "
                             "a teacher for logit KD needs the same classes in the same order")
        return _frozen(teacher)
    teacher = create_model(t.name, classes=classes, in_chans=t.in_chans, input_size=t.input_size, **t.kwargs)
    if t.checkpoint:
        teacher.load_state_dict(_state_dict_from(t.checkpoint))
    else:
        log.warning("teacher %s has no checkpoint: distilling from random weights", t.name)
    return _frozen(teacher)


def _frozen(teacher: nn.Module) -> nn.Module:
    """Eval mode, no gradients, BatchNorm folded."""
    from lightfer.models.fold import fold_batchnorm

    teacher.eval().requires_grad_(False)
    log.debug("teacher: %d BatchNorm layers folded", fold_batchnorm(teacher))
    return teacher


def model_input_fn(model: nn.Module, normalize: bool):
    """``raw (B, C, H, W) in [0, 1] → model input`` using the model's pretrained config."""
    pc = getattr(model, "pretrained_cfg", None)
    if not normalize or pc is None:
        return lambda x: x
    return lambda x: to_model_input(x, pc.input_size, pc.in_chans, pc.mean, pc.std)


@torch.no_grad()
def _predict_all(model: nn.Module, ds: Dataset, cfg: TrainConfig, device: torch.device,
                 tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` (float32, CPU) and hard labels ``(N,)`` of ``model`` over ``ds`` in order, no augmentation.

    With ``tta_flip`` the "logits" are the log of the mean softmax over the image and its mirror."""
    prep = model_input_fn(model, cfg.data.normalize)
    loader = DataLoader(Indexed(ds), batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(0))
    outs, labels = [], []
    for batch in loader:
        _, x, _, hard = split_batch(batch, cfg.data.target)
        x = prep(x.to(device))
        if tta_flip:
            p = (model(x).float().softmax(1) + model(x.flip(-1)).float().softmax(1)) / 2
            outs.append(p.clamp_min(1e-8).log().cpu())
        else:
            outs.append(model(x).float().cpu())
        labels.append(hard)
    return torch.cat(outs), torch.cat(labels)


def teacher_logits_table(teacher: nn.Module, ds: Dataset, cfg: TrainConfig, device: torch.device,
                         path: str | Path, num_classes: int, compute: bool = True) -> torch.Tensor:
    """Teacher logits ``(N, K)`` for every training sample, computed once into ``path`` and reused.

    With ``compute=False`` (non-zero DDP ranks) the file must already exist."""
    path = Path(path)
    n = len(ds)  # type: ignore[arg-type]
    if not path.is_file():
        if not compute:
            raise FileNotFoundError(f"teacher logits {path} missing")
        log.info("precomputing teacher logits for %d samples into %s", n, path)
        logits, _ = _predict_all(teacher.to(device).eval(), ds, cfg, device, tta_flip=cfg.teacher.tta_flip)
        from lightfer.train.checkpoint import save_checkpoint

        save_checkpoint({"logits": logits, "num_samples": n, "teacher": cfg.teacher.name,
                         "checkpoint": cfg.teacher.checkpoint, "pretrained": cfg.teacher.pretrained,
                         "flip": cfg.teacher.tta_flip}, path)
    obj = torch.load(path, map_location="cpu", weights_only=False)
    logits = obj.get("logits") if isinstance(obj, dict) else None
    limit = cfg.data.limit_train
    if isinstance(logits, torch.Tensor) and limit == n and logits.shape[0] > n:
        log.info("%s: the first %d of its %d rows (data.limit_train)", path, n, logits.shape[0])
        logits = logits[:n]  # the limited split is the first n samples
    if not isinstance(logits, torch.Tensor) or logits.shape != (n, num_classes):
        got = None if logits is None else tuple(logits.shape)
        raise ValueError(f"{path}: teacher logits of shape {got} do not fit {n} samples x {num_classes} classes; "
                         "delete the file to recompute")
    if compute and isinstance(obj, dict):
        _warn_if_other_teacher(path, obj, cfg)
    return logits.float()


def _warn_if_other_teacher(path: Path, meta: dict, cfg: TrainConfig) -> None:
    """Log a warning when a reused logits file was made by another teacher or flip setting than the config's
    (files from ``scripts/teacher_logits.py`` may hold an ensemble on purpose: the file wins, the log says so)."""
    t = cfg.teacher
    if "flip" in meta and bool(meta["flip"]) != bool(t.tta_flip):
        log.warning("%s holds logits %s flip averaging, the config says teacher.tta_flip = %s: using the file",
                    path, "with" if meta["flip"] else "without", t.tta_flip)
    if meta.get("teacher") and (t.name or t.checkpoint) and meta["teacher"] not in (t.name, t.checkpoint):
        log.warning("%s was made by teacher %r, the config names %r: using the file", path, meta["teacher"],
                    t.checkpoint or t.name)


def build_criterion(cfg: TrainConfig, train_ds: Dataset, num_classes: int, teacher: nn.Module | None,
                    device: torch.device) -> nn.Module | None:
    """F-PDLS with the configured prior, or ``None`` (plain CE with smoothing)."""
    lc = cfg.loss
    if not lc.fpdls:
        return None
    if lc.fpdls_prior == "uniform":
        prior = uniform_prior(num_classes)
    elif lc.fpdls_prior == "votes":
        soft = getattr(train_ds, "soft_labels", None)
        if soft is None:
            raise ValueError("loss.fpdls_prior = votes needs a dataset with vote distributions (FERPlus)")
        prior = prior_from_votes(np.asarray(soft), np.asarray(getattr(train_ds, "labels")))
    elif lc.fpdls_prior == "confusion":
        if teacher is None:
            raise ValueError("loss.fpdls_prior = confusion needs teacher.name/checkpoint (the model whose confusion is used)")
        logits, labels = _predict_all(teacher.to(device).eval(), train_ds, cfg, device)
        prior = prior_from_confusion(confusion_matrix(logits, labels, num_classes))
    else:
        prior = _load_matrix(lc.fpdls_prior[len("file:"):])
    if prior.shape != (num_classes, num_classes):
        raise ValueError(f"F-PDLS prior is {tuple(prior.shape)}, need ({num_classes}, {num_classes})")
    log.info("F-PDLS prior (%s):\n%s", lc.fpdls_prior, np.array2string(prior.numpy(), precision=3))
    return FPDLSLoss(prior, alpha=lc.fpdls_alpha, gamma=lc.fpdls_gamma)


def _load_matrix(path: str) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prior matrix {p} not found")
    if p.suffix == ".npy":
        return torch.as_tensor(np.load(p), dtype=torch.float32)
    if p.suffix in (".pt", ".pth"):
        return torch.as_tensor(torch.load(p, map_location="cpu", weights_only=True), dtype=torch.float32)
    return torch.as_tensor(np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None), dtype=torch.float32)


def build_task(cfg: TrainConfig, student: nn.Module, teacher: nn.Module | None,
               criterion: nn.Module | None) -> SupervisedTask:
    """Supervised, KD or manifold-distillation task."""
    lc = cfg.loss
    if lc.task == "supervised":
        return SupervisedTask(criterion, lc.smoothing)
    md = None
    if lc.task == "manifold":
        md = ManifoldDistillation(lc.md_lambda_intra, lc.md_lambda_inter, lc.md_lambda_rand, lc.md_samples,
                                  lc.md_chunk, lc.md_layout, lc.md_teacher_layout, lc.md_grids)
    return DistillationTask(teacher, lc.kd_temperature, lc.kd_alpha, criterion, lc.smoothing, md, lc.md_beta,
                            lc.md_layers, student, teacher_amp=amp_dtype(cfg.teacher.amp))


class ModelEma(nn.Module):
    """Exponential moving average of a model, ``e ← d_t·e + (1 − d_t)·w`` over its parameters *and* its float
    buffers (BatchNorm running statistics); integer buffers (batch counters) are copied.

    ``d_t = min(decay, (1 + t) / (10 + t))`` after ``t`` updates: the average forgets the random
    initialisation (weights and the initial BN statistics) within the first epochs instead of after
    ~1/(1 − decay) steps. Both halves were measured on the 40-epoch KD recipe (docs/model_card_history.md, "EMA"):
    averaging BN statistics *without* the warm-up left a from-scratch ShuffleNetV2 predicting one class for 7+
    epochs; copying the live model's BN statistics onto averaged weights instead cost 0.8–1.4 points at the
    end (the statistics belong to other weights)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0  # set to epochs × steps when a run resumes

    def current_decay(self) -> float:
        """``d_t`` for the next update."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        d = self.current_decay()
        self.updates += 1
        current = model.state_dict()
        averaged: list[torch.Tensor] = []
        latest: list[torch.Tensor] = []
        for name, e in self.module.state_dict().items():
            m = current[name].detach()
            if e.dtype.is_floating_point:
                averaged.append(e)
                latest.append(m)
            else:
                e.copy_(m)
        if averaged:  # one fused launch per tensor group on a GPU (a kernel per tensor made small steps host-bound)
            torch._foreach_lerp_(averaged, latest, 1.0 - d)

    def forward(self, x: torch.Tensor) -> Any:
        """The averaged model's output."""
        return self.module(x)
