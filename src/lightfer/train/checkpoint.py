"""Checkpoints as plain dicts (torchvision-reference style), written atomically, with RNG states
so that ``--resume`` continues bit-for-bit, and a loader that rebuilds the model by name."""
from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng", "load_model_from_checkpoint",
           "strip_training_state", "CheckpointError"]

log = logging.getLogger(__name__)

TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing or not a lightfer checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a trusted local file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - report which file is broken
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


def strip_training_state(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without what only ``--resume`` needs (optimizer, scheduler, scaler, RNG states): the
    weights (live and EMA), model name, preprocessing, config, metrics and confusion stay, so ``lightfer eval``,
    ``ship_model.py`` and ``teacher.checkpoint`` read it as before. About a third of the size for SGD runs."""
    state = load_checkpoint(src)
    return save_checkpoint({k: v for k, v in state.items() if k not in TRAINING_STATE}, dst)


def capture_rng(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """States of python, numpy, torch (CPU and CUDA) and the data-loader generator."""
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        rng["loader"] = loader_generator.get_state()
    return rng


def restore_rng(rng: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`capture_rng` saved."""
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if loader_generator is not None and "loader" in rng:
        loader_generator.set_state(rng["loader"])


def load_model_from_checkpoint(path: str | Path, use_ema: bool = True) -> nn.Module:
    """Rebuild the trained classifier (by registered name) with its weights and class names, in eval mode.

    Uses the EMA weights when the run kept them and ``use_ema`` is set. A network trained with MobileOne-style
    branches (``model.kwargs.rep``) comes back folded into its plain layout (:func:`lightfer.models.rep.reparameterize`)."""
    from lightfer.models import create_model, get_pretrained_cfg
    from lightfer.models.rep import reparameterize

    state = load_checkpoint(path)
    if "model_name" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not a lightfer training checkpoint (no model_name/model)")
    pcfg = state.get("pretrained_cfg", {})
    default = get_pretrained_cfg(state["model_name"])
    size = pcfg.get("input_size")
    kwargs = dict(state.get("model_kwargs", {}))
    if "resizer" in kwargs:  # pretrained_cfg holds the resizer's input side; the backbone's is the model config's
        size = state.get("model_input_size", (state.get("config") or {}).get("model", {}).get("input_size"))
    model = create_model(
        state["model_name"], classes=tuple(pcfg["classes"]) if pcfg.get("classes") else None,
        in_chans=pcfg.get("in_chans"), input_size=None if size == default.input_size else size,
        **kwargs,
    )
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights)
    model.eval()
    if folded := reparameterize(model):  # a run trained with ``rep``: back to the plain layout for inference
        log.info("%s: folded %d over-parameterised conv blocks into the plain network", path, folded)
    if pcfg.get("mean") and pcfg.get("std"):
        import dataclasses

        model.pretrained_cfg = dataclasses.replace(  # type: ignore[assignment]
            model.pretrained_cfg, mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]))
    return model.eval()
