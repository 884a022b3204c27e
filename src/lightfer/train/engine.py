"""The training loop, shaped like torchvision's classification reference: :func:`train_one_epoch`,
:func:`evaluate`, :func:`main`. One loop serves supervised, KD and manifold-distillation runs, on CPU or
CUDA, alone or under ``torchrun`` (DistributedDataParallel, gloo on CPU / nccl on GPU).

Outputs in ``cfg.output_dir``: ``config.yaml`` (resolved), ``last.pt`` and ``best.pt`` (atomic),
``log.csv`` (one row per epoch) and, with F-PDLS, ``fpdls_prior.txt`` (the prior as used). ``main(cfg, resume=True)``
continues from ``last.pt`` bit-for-bit, with the prior read back from ``fpdls_prior.txt`` (a ``confusion`` prior is
not computed again).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightfer.optim import SAM, create_optimizer, create_scheduler
from lightfer.optim.factory import WarmupCosine
from lightfer.train.builders import (ModelEma, build_criterion, build_model, build_task, build_teacher,
                                     model_input_fn, teacher_logits_table)
from lightfer.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from lightfer.train.config import TrainConfig, config_to_dict, save_config
from lightfer.train.data import (IndexRange, Indexed, TensorBatches, augment_batch, build_datasets,
                                 dataset_classes, mix_batch, split_batch, split_tensors)
from lightfer.train.tasks import SupervisedTask, amp_dtype, autocast_to, cpu_bf16_native

log = logging.getLogger(__name__)

__all__ = ["train_one_epoch", "evaluate", "main"]


def _dist() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    return autocast_to(device.type, amp_dtype(amp))


_SYNC_EVERY = 25  # GPU: steps between the host's reads of the running sums (progress bar, loss check)


def train_one_epoch(
    model: nn.Module, task: SupervisedTask, loader: DataLoader, optimizer: torch.optim.Optimizer,
    device: torch.device, epoch: int, cfg: TrainConfig, *, prep: Callable, teacher_prep: Callable | None = None,
    scheduler: Any = None, sched_when: str = "none", scaler: torch.amp.GradScaler | None = None,
    ema: ModelEma | None = None, teacher_logits: torch.Tensor | None = None, timing: dict[str, float] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean ``loss``, ``acc`` and each loss term (``loss_<name>``).
    ``timing``, if given, receives ``steps``, ``skipped`` and ``steady`` (seconds of the steps after the first
    ``skipped``, which pay for one-off warm-ups: cuDNN autotuning, lazy initialisation)."""
    from tqdm import tqdm

    model.train()
    task.train()
    rank, world = _dist()
    # running sums stay on the device (float64, the same arithmetic as Python floats): on a GPU the host reads
    # them only every _SYNC_EVERY steps, so it can queue the next batches instead of waiting for each step
    sync_every = 1 if device.type == "cpu" else _SYNC_EVERY
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step whose loss was not finite
    seen = 0
    show = cfg.progress and rank == 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False, dynamic_ncols=True)
    n_steps = len(loader)
    skipped, t_steady = max(1, n_steps // 10), None
    measure = bool(cfg.optim.clip_grad) or cfg.log_grad_norm
    norms: list[torch.Tensor] | None = [] if cfg.log_grad_norm else None  # each step's gradient norm, on the device
    for step, batch in enumerate(bar):
        if step == skipped:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the clock starts when the queued warm-up steps are done
            t_steady = time.perf_counter()
        idx, raw, target, hard = split_batch(batch, cfg.data.target)
        raw, target, hard = raw.to(device, non_blocking=True), target.to(device), hard.to(device)
        mix = None
        if cfg.data.normalize:
            raw = augment_batch(raw, cfg.augment)
            raw, mix = mix_batch(raw, cfg.augment)
        x = prep(raw)
        tx = teacher_prep(raw) if teacher_prep is not None else None
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            tx = tx.contiguous(memory_format=torch.channels_last) if tx is not None else None
        t_logits = teacher_logits[idx.to(teacher_logits.device)].to(device) if teacher_logits is not None else None

        def forward() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
            with _autocast(device, cfg.amp):
                losses, logits = task(model, x, target, teacher_x=tx, teacher_logits=t_logits, mix=mix)
            return sum(losses.values()), losses, logits  # type: ignore[return-value]

        loss, losses, logits = forward()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        synced = (step + 1) % sync_every == 0 or step + 1 == n_steps
        if synced and int(first_bad) >= 0:
            raise FloatingPointError(f"loss is not finite at epoch {epoch + 1} step {int(first_bad)} (now "
                                     f"{loss.item()}: { {k: float(v.detach()) for k, v in losses.items()} }); "
                                     "lower optim.lr?")
        if scaler is not None:
            scaler.scale(loss).backward()
            if measure:
                scaler.unscale_(optimizer)
                _clip_and_measure(model, cfg, norms)
            scaler.step(optimizer)
            scaler.update()
        elif isinstance(optimizer, SAM):
            loss.backward()
            optimizer.first_step(zero_grad=True)
            forward()[0].backward()
            if measure:
                _clip_and_measure(model, cfg, norms)
            optimizer.second_step()
        else:
            loss.backward()
            if measure:
                _clip_and_measure(model, cfg, norms)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if sched_when == "iter":
            scheduler.step()
        if ema is not None:
            ema.update(_unwrap(model))
        b = hard.shape[0]
        for k, v in (("loss", loss), *((f"loss_{k}", v) for k, v in losses.items())):
            term = v.detach().double() * b
            sums[k] = sums[k] + term if k in sums else term
        correct += (logits.argmax(1) == hard).sum()
        seen += b
        if show and synced:
            bar.set_postfix(loss=f"{sums['loss'].item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    stats = torch.stack([*sums.values(), correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                         device=device)])
    if world > 1:
        dist.all_reduce(stats)  # on the device: NCCL reduces CUDA tensors only
    stats = stats.cpu()  # waits for the queued steps, so the steady time below counts them
    if timing is not None:
        timing.update(steps=n_steps, skipped=skipped,
                      steady=time.perf_counter() - t_steady if t_steady is not None else 0.0)
    n = max(stats[-1].item(), 1.0)
    out = {k: stats[i].item() / n for i, k in enumerate(sums)}
    out["acc"] = stats[-2].item() / n
    if norms:
        out.update(_norm_stats(torch.stack(norms).float().cpu()))
    return out


def _clip_and_measure(model: nn.Module, cfg: TrainConfig, norms: list[torch.Tensor] | None) -> None:
    """Clip the gradients to ``optim.clip_grad`` (if set) and keep their total norm before clipping in ``norms``."""
    total = nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad or math.inf)
    if norms is not None:
        norms.append(total.detach())


def _norm_stats(norms: torch.Tensor) -> dict[str, float | int]:
    """One epoch's per-step gradient norms ``(S,)`` -> ``grad_norm_max``, ``grad_norm_median`` and
    ``grad_norm_max_step`` (0-based step of the largest), over the finite ones (an fp16 step the scaler skipped has
    none); ``grad_norm_nonfinite`` counts the others."""
    finite = torch.isfinite(norms)
    kept = norms[finite]
    if kept.numel() == 0:
        return {"grad_norm_max": math.nan, "grad_norm_median": math.nan, "grad_norm_max_step": -1,
                "grad_norm_nonfinite": int(norms.numel())}
    big = int(torch.where(finite, norms, torch.full_like(norms, -1.0)).argmax())
    return {"grad_norm_max": float(kept.max()), "grad_norm_median": float(kept.median()), "grad_norm_max_step": big,
            "grad_norm_nonfinite": int((~finite).sum())}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
             prep: Callable, target: str = "hard", amp: str = "none", tta_flip: bool = False) -> dict[str, Any]:
    """Cross-entropy, accuracy, UAR and confusion matrix (row = true) over ``loader``; under DDP each
    rank scores its shard and the sums are all-reduced. With ``tta_flip`` each ``(B, C, H, W)`` batch is scored
    as the shipped models serve it: the log of the mean of its and its mirror's class probabilities."""
    model.eval()
    _, world = _dist()
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sums stay on the device: no sync per batch
    for batch in loader:
        _, raw, _, hard = split_batch(batch, target)
        with _autocast(device, amp):
            x = prep(raw.to(device))
            logits = model(x).float()
            if tta_flip:
                logits = ((logits.softmax(1) + model(x.flip(-1)).float().softmax(1)) / 2).clamp_min(1e-12).log()
        hard = hard.to(device)
        loss_sum += nn.functional.cross_entropy(logits, hard, reduction="sum").double()
        # a one-hot sum, not bincount: CUDA's bincount has no deterministic kernel (cfg.deterministic)
        conf += nn.functional.one_hot(hard * num_classes + logits.argmax(1), num_classes ** 2).sum(0)
    stats = torch.cat([conf.double(), loss_sum.view(1)])
    if world > 1:
        dist.all_reduce(stats)
    stats = stats.cpu()
    cm = stats[:-1].reshape(num_classes, num_classes)
    n = max(cm.sum().item(), 1.0)
    support = cm.sum(1)
    recall = torch.where(support > 0, cm.diagonal() / support.clamp_min(1), torch.nan)
    return {"loss": stats[-1].item() / n, "acc": cm.diagonal().sum().item() / n,
            "uar": float(np.nanmean(recall.numpy())) if (support > 0).any() else float("nan"),
            "confusion": cm.long().tolist()}


def _setup_distributed(device_cfg: str) -> tuple[int, int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return (*_dist(), int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_cfg != "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(cfg.device)


def _warn_emulated_bf16(cfg: TrainConfig, device: torch.device, teacher_runs: bool) -> None:
    """Log a warning when ``amp`` (or ``teacher.amp`` for a teacher that runs) asks for bf16 on a CPU that only
    emulates it (:func:`~lightfer.train.tasks.cpu_bf16_native`): the run still works, several times slower."""
    if device.type != "cpu":
        return
    asked = [k for k, v in (("amp", cfg.amp), ("teacher.amp", cfg.teacher.amp if teacher_runs else "none"))
             if v == "bf16"]
    if asked and not cpu_bf16_native():
        log.warning("%s: bf16 on this CPU (no AVX512-BF16 / AMX) is emulated and several times slower than float32; "
                    "set %s", " and ".join(asked), " ".join(f"{k}=none" for k in asked))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(ds: Dataset, cfg: TrainConfig, *, train: bool, epoch: int, rank: int, world: int,
            fields: list[torch.Tensor] | None = None) -> DataLoader | TensorBatches:
    """Epoch loader: the shuffle order depends only on (seed, epoch), so a resumed run draws the same batches.
    Training with ``data.drop_last`` skips the final partial batch (unless the split is smaller than one batch).
    With ``fields`` (the split from :func:`split_tensors`) the same index batches are drawn and the items are
    indexed from those tensors (:class:`TensorBatches`)."""
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    ids: Dataset = Indexed(ds) if fields is None else IndexRange(len(ds))  # type: ignore[arg-type]
    bs = cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size)
    sampler = None
    if world > 1 and train:
        sampler = torch.utils.data.distributed.DistributedSampler(ids, num_replicas=world, rank=rank, shuffle=True,
                                                                  seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    elif world > 1:
        ids = torch.utils.data.Subset(ids, list(range(rank, len(ids), world)))  # exact shards, no padding
    workers = {} if fields is not None else {"num_workers": cfg.data.num_workers,
                                             "pin_memory": torch.cuda.is_available()}
    per_rank = len(sampler) if sampler is not None else len(ids)  # type: ignore[arg-type]
    drop = train and cfg.data.drop_last and per_rank >= bs  # a split under one batch keeps its one batch
    loader = DataLoader(ids, batch_size=bs, shuffle=train and sampler is None, sampler=sampler, generator=gen,
                        drop_last=drop, **workers)
    return TensorBatches(loader, fields) if fields is not None else loader


class _CsvLog:
    """One CSV row per epoch; on resume, rows past the checkpoint's epoch are dropped."""

    def __init__(self, path: Path, keep_upto: int | None) -> None:
        self.path = path
        if keep_upto is not None and path.is_file():
            with path.open() as f:
                rows = list(csv.DictReader(f))
            rows = [r for r in rows if int(r["epoch"]) <= keep_upto]
            if rows:
                with path.open("w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
            else:
                path.unlink()
        elif keep_upto is None and path.is_file():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` under the file's header. A row with columns the file lacks (a run resumed with another
        logging option) rewrites the file once with the union of the columns; missing cells stay empty."""
        header = list(row)
        if self.path.is_file():
            with self.path.open() as f:
                header = next(csv.reader(f), []) or header
            extra = [k for k in row if k not in header]
            if extra:
                with self.path.open() as f:
                    rows = list(csv.DictReader(f))
                with self.path.open("w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=header + extra, restval="")
                    w.writeheader()
                    w.writerows([*rows, row])
                return
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, restval="")
            if new:
                w.writeheader()
            w.writerow(row)


def main(cfg: TrainConfig, *, resume: bool | str = False, model: nn.Module | None = None,
         teacher: nn.Module | None = None, datasets: tuple[Dataset, Dataset | None] | None = None,
         stop_after: int | None = None, time_budget: float | None = None, fit_share: float = 1.0) -> dict[str, Any]:
    """Train as ``cfg`` says. ``model`` / ``teacher`` / ``datasets`` replace the ones the config names
    (tests, notebooks). ``resume``: ``True`` for ``output_dir/last.pt`` or a checkpoint path.
    ``stop_after``: stop once this epoch is done (a time-boxed session; ``resume`` continues the same schedule).
    ``time_budget``: seconds for this call, set-up included. After the first epoch the schedule is shortened to
    the epochs that fit (see :func:`_fit_epochs`), as if the config had said so: with a one-epoch warm-up the
    cosine schedule is then exactly that of the shorter config, and ``resume`` keeps the shortened length. A
    schedule of 10 or more epochs is fitted once more after epoch 3, at the pace of epochs 2-3 (never beyond the
    config's length): a first epoch slower or faster than the rest no longer costs epochs or the schedule's end;
    the cosine then bends slightly at that point (a few percent of the lr). Any later epoch that would overrun the
    budget is not started (``last.pt`` holds the one before it).
    ``fit_share``: the schedule is fitted into this share of the time left after the first epoch (the stop rule
    still uses the whole budget): slack for runs whose later epochs may be slower than the first.

    Returns a summary: ``best_acc``, ``best_epoch``, ``last`` (the last CSV row), ``output_dir``,
    ``epochs`` (the schedule's length, shortened or not)."""
    t_main = time.perf_counter()
    cfg = copy.copy(cfg)  # a time budget may shorten cfg.epochs; the caller's object stays as it was
    rank, world, local_rank = _setup_distributed(cfg.device)
    device = _device(cfg, local_rank)
    out = Path(cfg.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest kernels once
    _seed_all(cfg.seed)
    train_ds, val_ds = datasets if datasets is not None else build_datasets(cfg.data, seed=cfg.seed)
    classes = dataset_classes(train_ds) or tuple(f"class_{i}" for i in range(cfg.model.num_classes or 7))
    k = len(classes)
    if model is None:
        model = build_model(cfg, classes)
    model_classes = tuple(getattr(getattr(model, "pretrained_cfg", None), "classes", None) or classes)
    if len(model_classes) != len(classes):
        raise ValueError(f"the model has {len(model_classes)} outputs {model_classes} but the data has "
                         f"{len(classes)} classes {classes}")
    if model_classes != classes and set(model_classes) == set(classes) and hasattr(train_ds, "remap"):
        log.info("re-indexing the data into the model's class order %s", model_classes)  # e.g. pretrained weights
        train_ds = train_ds.remap(model_classes)
        val_ds = val_ds.remap(model_classes) if val_ds is not None and hasattr(val_ds, "remap") else val_ds
        classes = model_classes
    elif model_classes != classes:
        log.warning("model classes %s differ from the data's %s: output i is trained as data class i",
                    model_classes, classes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    # logit KD from a logits file already written needs no teacher (it may not even be on this machine)
    logits_ready = cfg.loss.task == "kd" and bool(cfg.teacher.logits_file) and Path(cfg.teacher.logits_file).is_file()
    if cfg.loss.task in ("kd", "manifold") and teacher is None and not cfg.teacher.name and not cfg.teacher.logits_file:
        raise ValueError(f"loss.task = {cfg.loss.task} needs a teacher: teacher.name or a written teacher.logits_file")
    saved_prior = out / "fpdls_prior.txt"
    reuse_prior = bool(resume) and cfg.loss.fpdls and saved_prior.is_file()
    if reuse_prior:  # the prior the run started with (a confusion prior would cost a pass of the teacher)
        log.info("resuming with the F-PDLS prior the run wrote: %s", saved_prior)
        cfg = copy.deepcopy(cfg)
        cfg.loss.fpdls_prior = f"file:{saved_prior}"
    needs_teacher = (cfg.loss.task != "supervised" and not logits_ready) or cfg.loss.fpdls_prior == "confusion"
    if teacher is None and cfg.teacher.name and needs_teacher:
        teacher = build_teacher(cfg, classes)
    elif logits_ready and teacher is None:
        log.info("teacher logits from %s: the teacher is not built", cfg.teacher.logits_file)
    _warn_emulated_bf16(cfg, device, teacher is not None)
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
        if cfg.channels_last:
            teacher.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg, train_ds, k, teacher, device)
    if criterion is not None and rank == 0 and not reuse_prior:  # the prior as used, reusable as ``file:PATH``
        np.savetxt(saved_prior, criterion.prior.cpu().numpy(), fmt="%.9g",  # 9 digits: float32 reads back exactly
                   header=f"F-PDLS prior ({cfg.loss.fpdls_prior}), row = true class: {' '.join(classes)}")
    t_logits = None
    if cfg.loss.task in ("kd", "manifold") and cfg.teacher.logits_file:
        if teacher is None and not logits_ready:
            raise FileNotFoundError(f"teacher.logits_file {cfg.teacher.logits_file} does not exist and no "
                                    "teacher.name is given to compute it")
        if rank == 0:
            teacher_logits_table(teacher, train_ds, cfg, device, cfg.teacher.logits_file, k)
        if world > 1:
            dist.barrier()
        t_logits = teacher_logits_table(teacher, train_ds, cfg, device, cfg.teacher.logits_file, k,
                                        compute=False).to(device)  # on the device: no copy per step
        if cfg.loss.task == "kd":
            teacher = None  # the logits are reused; the teacher is not needed any more
        # manifold: the KD term reads the file, the teacher still runs online for its features
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
    task = build_task(cfg, model, teacher, criterion).to(device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp: fp16 needs CUDA (loss scaling); use amp: bf16 on CPU")
    if cfg.optim.sam and cfg.amp == "fp16":
        raise ValueError("SAM with fp16 loss scaling is not supported; use amp: bf16 or none")
    ck = load_checkpoint(out / "last.pt" if resume is True else resume, map_location=device) if resume else None
    fitted = int(ck["fitted_epochs"]) if ck is not None and ck.get("fitted_epochs") else None
    if fitted is not None:
        cfg.epochs = fitted  # a time budget shortened this run's schedule; keep its length
    optimizer = create_optimizer(model, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum,
                                 cfg.optim.nesterov, tuple(cfg.optim.betas), cfg.optim.sam, cfg.optim.sam_rho,
                                 cfg.optim.sam_adaptive)
    fields: dict[str, list[torch.Tensor] | None] = {"train": None, "val": None}
    if cfg.data.in_memory:
        fields = {"train": split_tensors(train_ds, device),
                  "val": split_tensors(val_ds, device) if val_ds is not None else None}
        log.info("in memory on %s: %.1f MB of training and validation tensors", device,
                 sum(t.numel() * t.element_size() for f in fields.values() if f for t in f) / 2**20)
    steps = len(_loader(train_ds, cfg, train=True, epoch=0, rank=rank, world=world))
    sc = cfg.schedule
    scheduler, when = create_scheduler(optimizer, sc.name, cfg.epochs, steps, sc.warmup_epochs, sc.min_lr_factor,
                                       sc.step_size, sc.gamma, sc.patience,
                                       "max" if sc.plateau_metric == "val_acc" else "min")
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" and device.type == "cuda" else None
    start, best = 0, {"acc": -1.0, "epoch": 0}
    if ck is not None:
        changed = _changed_keys(ck.get("config", {}), config_to_dict(cfg))
        if changed:
            log.warning("resuming with a changed config (%s): the run is no longer a pure continuation",
                        ", ".join(changed))
        _unwrap(model).load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler") is not None:
            scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck.get("ema") is not None:
            ema.module.load_state_dict(ck["ema"])
            ema.updates = int(ck["epoch"]) * steps  # the decay warm-up continues where it stopped
        start, best = int(ck["epoch"]), dict(ck["best"])
        restore_rng(ck["rng"])
        log.info("resumed from epoch %d (best acc %.4f at epoch %d)", start, best["acc"], best["epoch"])
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    prep = model_input_fn(_unwrap(model), cfg.data.normalize)
    teacher_prep = model_input_fn(teacher, cfg.data.normalize) if teacher is not None else None
    csv_log = _CsvLog(out / "log.csv", start if resume else None) if rank == 0 else None
    tb = _tensorboard(out) if cfg.tensorboard and rank == 0 else None
    row: dict[str, Any] = {}
    end = cfg.epochs if stop_after is None else min(cfg.epochs, int(stop_after))
    configured, first_fit_at = cfg.epochs, None  # a time budget fits within the config's length (seconds at the fit)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        timing: dict[str, float] = {}
        tr = train_one_epoch(model, task, _loader(train_ds, cfg, train=True, epoch=epoch, rank=rank, world=world,
                                                      fields=fields["train"]),
                             optimizer, device, epoch, cfg, prep=prep, teacher_prep=teacher_prep, scheduler=scheduler,
                             sched_when=when, scaler=scaler, ema=ema, teacher_logits=t_logits, timing=timing)
        t_trained = time.perf_counter()
        ev = None
        if val_ds is not None:
            ev = evaluate(ema.module if ema is not None else model,
                          _loader(val_ds, cfg, train=False, epoch=epoch, rank=rank, world=world,
                                  fields=fields["val"]), device, k,
                          prep=prep, target=cfg.data.target, amp=cfg.amp, tta_flip=cfg.val_tta_flip)
        if when == "epoch":
            scheduler.step()
        elif when == "metric":
            metric = (ev["acc"] if sc.plateau_metric == "val_acc" else ev["loss"]) if ev else tr["loss"]
            scheduler.step(metric)
        row = {"epoch": epoch + 1, "lr": lr, **{f"train_{k_}": v for k_, v in tr.items()},
               "val_loss": ev["loss"] if ev else math.nan, "val_acc": ev["acc"] if ev else math.nan,
               "val_uar": ev["uar"] if ev else math.nan, "seconds": round(time.perf_counter() - t0, 3)}
        if time_budget is not None:
            spent = time.perf_counter() - t_main
            fit, why = cfg.epochs, ""
            if epoch == 0:
                pace = _epoch_pace(row["seconds"], timing, time.perf_counter() - t_trained)
                fit = _fit_epochs(configured, spent + (time_budget - spent) * fit_share, spent, pace)
                why = f"{row['seconds']:.1f} s for the first, {pace:.1f} s per epoch after its warm-up steps"
                first_fit_at = spent
            elif epoch + 1 == _REFIT_AFTER and first_fit_at is not None and cfg.epochs >= _REFIT_MIN_EPOCHS:
                pace = (spent - first_fit_at) / (_REFIT_AFTER - 1)  # epochs 2-3: past the first's one-off costs
                fit = _fit_epochs(configured, spent + (time_budget - spent) * fit_share, spent, pace, done=epoch + 1)
                why = f"re-fitted after epoch {epoch + 1} at {pace:.1f} s per epoch over epochs 2-{epoch + 1}"
            if why:  # a fitting epoch: every rank takes rank 0's length (its clock decides)
                fit = _from_rank0(fit, world, device)
            if fit != cfg.epochs:
                log.warning("time budget %.0f s: the schedule is %s from %d to %d epochs (%s, %.1f s spent)",
                            time_budget, "shortened" if fit < cfg.epochs else "lengthened", cfg.epochs, fit, why,
                            spent)
                _refit_schedule(scheduler, fit, steps, epoch + 1)
                cfg.epochs, fitted = fit, fit
                end = fit if stop_after is None else min(fit, int(stop_after))
                if rank == 0:
                    save_config(cfg, out / "config.yaml")  # the resolved config says the length that runs
            elif epoch > 0 and epoch + 1 < end and _from_rank0(int(spent + row["seconds"] > time_budget), world,
                                                                 device):
                log.warning("time budget %.0f s: stopping after epoch %d of %d (%.1f s spent); --resume continues",
                            time_budget, epoch + 1, cfg.epochs, spent)
                end = epoch + 1
        score = ev["acc"] if ev else tr["acc"]
        is_best = score > best["acc"]
        if is_best:
            best = {"acc": score, "epoch": epoch + 1}
        if rank == 0:
            state = {**_state(cfg, model, optimizer, scheduler, scaler, ema, epoch + 1, best, row),
                     "fitted_epochs": fitted}
            if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == end:
                save_checkpoint(state, out / "last.pt")
            if is_best:
                save_checkpoint({**state, "confusion": ev["confusion"] if ev else None}, out / "best.pt")
            assert csv_log is not None
            csv_log.write(row)
            if tb is not None:
                for key, v in row.items():
                    if key != "epoch":
                        tb.add_scalar(key, v, epoch + 1)
            log.info("epoch %d/%d  loss %.4f  acc %.4f  val_acc %.4f  val_uar %.4f  %.1fs", epoch + 1, cfg.epochs,
                     tr["loss"], tr["acc"], row["val_acc"], row["val_uar"], row["seconds"])
        if epoch + 1 >= end:  # a time budget may have moved the end
            break
    if world > 1:
        dist.barrier()
    if tb is not None:
        tb.close()
    return {"best_acc": best["acc"], "best_epoch": best["epoch"], "last": row, "output_dir": str(out),
            "epochs": cfg.epochs}


def _epoch_pace(epoch_seconds: float, timing: dict[str, float], after_training: float) -> float:
    """Seconds a further epoch should cost, from the first one: its training steps after the first ``skipped``
    (which pay for one-off warm-ups) scaled to all ``steps``, plus what followed them (validation, saving) —
    or the whole first epoch when too few steps were timed. Never more than the first epoch took."""
    n, k, steady = timing.get("steps", 0), timing.get("skipped", 0), timing.get("steady", 0.0)
    if n - k < 5 or steady <= 0:
        return epoch_seconds
    return min(epoch_seconds, steady * n / (n - k) + after_training)


# --time-budget fits the schedule after the first epoch and once more after this one (from the pace of the epochs
# since the first, whose one-off costs the warm-up-step correction may miss), for schedules of at least
# _REFIT_MIN_EPOCHS epochs: so early that the cosine's value changes little at the re-fit
_REFIT_AFTER, _REFIT_MIN_EPOCHS = 3, 10


def _fit_epochs(epochs: int, budget: float, spent: float, pace: float, done: int = 1) -> int:
    """Epochs of a schedule that fit ``budget`` seconds when ``spent`` are gone (set-up and the ``done`` epochs run)
    and each further epoch costs ``pace`` seconds. At least ``done``, at most ``epochs``."""
    return max(done, min(int(epochs), done + max(0, int((budget - spent) // max(pace, 1e-9)))))


def _from_rank0(value: int, world: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (each rank reads its own clock; decisions from it must agree)."""
    if world <= 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)  # nccl needs the tensor on the GPU
    dist.broadcast(t, src=0)
    return int(t.item())


def _refit_schedule(scheduler: Any, fit: int, steps_per_epoch: int, epochs_run: int = 1) -> None:
    """Make a per-iteration warm-up + cosine schedule end after ``fit`` epochs, the optimizer's lr moved at once
    onto the new curve: exact (the shorter config's schedule) when the warm-up covered the first epoch and only it
    has run; later (the re-fit after epoch 3) the lr steps from the old length's cosine to the new one's at the
    current step, by a few percent. Step and plateau schedules need nothing. (Every parameter group may hold the
    same schedule object.)"""
    fns = getattr(scheduler, "lr_lambdas", [])
    cosines = [f for f in {id(f): f for f in fns}.values() if isinstance(f, WarmupCosine)]
    for fn in cosines:
        if fn.warmup_steps < steps_per_epoch and epochs_run == 1:
            log.warning("the warm-up is shorter than the first epoch: the shortened cosine is not exactly "
                        "the shorter config's")
        fn.total_steps = max(1, fit * steps_per_epoch)
    if cosines:
        lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, fns)]
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in ("options", "kwargs"):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _state(cfg: TrainConfig, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any, ema: ModelEma | None,
           epoch: int, best: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    m = _unwrap(model)
    pc = getattr(m, "pretrained_cfg", None)
    return {
        "model": m.state_dict(), "model_name": getattr(m, "model_name", cfg.model.name),
        "model_kwargs": dict(cfg.model.kwargs), "model_input_size": cfg.model.input_size,
        "pretrained_cfg": pc.to_dict() if pc is not None else {},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.module.state_dict() if ema is not None else None,
        "epoch": epoch, "best": best, "metrics": row, "config": config_to_dict(cfg),
        # the shuffle generator is re-seeded from (seed, epoch) every epoch: its next seed is all its state
        "rng": {**capture_rng(), "loader_seed": cfg.seed * 100_003 + epoch},
    }


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; logging to log.csv only")
        return None
    return SummaryWriter(str(out / "tb"))
