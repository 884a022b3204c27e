"""Expression-model registry: create classifiers by name, each with a pretrained config.

Modelled on timm's registry: a dict of small entrypoint functions filled by the
``@register_model(cfg)`` decorator, and :func:`create_model` as the one builder. The
:class:`PretrainedCfg` travels with the model (``model.pretrained_cfg``) so that
preprocessing (crop size, margin, channels, mean/std) is read from the model and
cannot drift between training and serving.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lightfer.defaults import DEFAULT_MODEL  # noqa: F401  (re-exported by lightfer.models)

log = logging.getLogger(__name__)

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt",
)


@dataclass(frozen=True)
class PretrainedCfg:
    """What a classifier expects as input and what its outputs mean."""

    input_size: int = 64  # side of the square face crop fed to the network, px
    in_chans: int = 1  # 1 = grayscale, 3 = RGB
    mean: tuple[float, ...] = (0.5,)  # per-channel mean on [0, 1] pixels
    std: tuple[float, ...] = (0.5,)  # per-channel std on [0, 1] pixels
    classes: tuple[str, ...] = FER2013_CLASSES  # output index -> label
    crop_margin: float = 0.0  # alignment margin (see lightfer.alignment.ALIGN_TEMPLATE)
    crop_mode: str = "align"  # "align": 5-point similarity warp; "box": square crop around the detector box
    tta_flip: bool = False  # serve the mean of the crop's and its mirror's probabilities (2 forward passes)
    weights: str | None = None  # where pretrained weights come from (human-readable source)
    loader: Callable[[nn.Module], None] | None = field(default=None, compare=False, repr=False)
    license: str | None = None  # licence of the pretrained weights
    int8_onnx: str | None = None  # shipped int8 ONNX Runtime model of these weights (lightfer.export.quantize)
    int8_sha256: str | None = None  # its file's sha256, checked when loaded
    int8_state: str | None = None  # hash of the weights it was quantised from (ExpressionClassifier uses it only for those)
    int8_any_cpu: bool = False  # 7-bit weights (reduce_range): the file scores the same on CPUs without VNNI
    description: str = ""  # one line for `lightfer models`

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the loader is omitted)."""
        d = dataclasses.asdict(self)
        for k in ("loader", "int8_onnx", "int8_sha256", "int8_state", "int8_any_cpu"):  # files of a shipped model, not its contract
            d.pop(k, None)
        return d


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    fn: Callable[..., nn.Module]
    cfg: PretrainedCfg


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(cfg: PretrainedCfg | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` under its name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name=name, fn=fn, cfg=cfg or PretrainedCfg())
        return fn

    return wrap


def list_models(pretrained: bool = False) -> list[str]:
    """Sorted names of registered models (only those with pretrained weights if asked)."""
    _import_all()
    names = sorted(_REGISTRY)
    if pretrained:
        names = [n for n in names if _REGISTRY[n].cfg.loader is not None]
    return names


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """Default pretrained config of a registered model."""
    return _entry(name).cfg


def _entry(name: str) -> ModelEntry:
    _import_all()
    if name not in _REGISTRY:
        from lightfer.models.shipped import retired_note

        note = retired_note(name)
        raise KeyError(note or f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    classes: tuple[str, ...] | None = None,
    input_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered classifier; ``model.pretrained_cfg`` describes its input and labels.

    Args:
        name: registered name (see :func:`list_models`).
        pretrained: load the weights named by the config (fetched by ``lightfer.assets`` or shipped).
        num_classes / classes: override the label set (pretrained weights then can't be loaded).
        in_chans: 1 (gray) or 3 (RGB) input channels.
        input_size: square input side in px, for architectures whose size is free.
        resizer: wrap the model with a Neural Resizer (True, ``"stn"`` or a dict of
            ``lightfer.models.resizer.ResizerCfg`` fields); ``input_size`` stays the backbone's.
        **kwargs: passed to the architecture's entrypoint.

    Returns:
        ``nn.Module`` mapping ``(B, in_chans, S, S)`` float images to ``(B, num_classes)`` logits.
    """
    entry = _entry(name)
    cfg = entry.cfg
    if classes is not None:
        cfg = dataclasses.replace(cfg, classes=tuple(classes))
    elif num_classes is not None and num_classes != cfg.num_classes:
        cfg = dataclasses.replace(cfg, classes=tuple(f"class_{i}" for i in range(num_classes)))
    if in_chans is not None and in_chans != cfg.in_chans:
        mean = (cfg.mean[0],) * in_chans
        std = (cfg.std[0],) * in_chans
        cfg = dataclasses.replace(cfg, in_chans=in_chans, mean=mean, std=std)
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=int(input_size))
        if _accepts(entry.fn, "img_size"):
            kwargs.setdefault("img_size", int(input_size))
    resizer = kwargs.pop("resizer", None)
    model = entry.fn(num_classes=cfg.num_classes, in_chans=cfg.in_chans, **kwargs)
    if pretrained:
        if cfg.loader is None:
            raise ValueError(f"model {name!r} has no pretrained weights")
        if cfg != entry.cfg and (cfg.classes != entry.cfg.classes or cfg.in_chans != entry.cfg.in_chans):
            raise ValueError(f"pretrained {name!r} needs its own classes/in_chans; drop the overrides")
        cfg.loader(model)
        model.eval()
    if resizer:  # seed 002's Neural Resizer in front of any backbone; the input side becomes its own
        from lightfer.models.resizer import attach_resizer

        model, cfg = attach_resizer(model, cfg, resizer)
    model.pretrained_cfg = cfg  # type: ignore[assignment]
    model.model_name = name  # type: ignore[assignment]
    return model


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _import_architectures() -> None:
    """Import the architecture modules (every model module but ``shipped``) so their decorators run."""
    import importlib
    import pkgutil

    import lightfer.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("registry", "shipped") and not info.name.startswith("_"):
            importlib.import_module(f"lightfer.models.{info.name}")


def _import_all() -> None:
    """Import the model modules so their ``@register_model`` decorators run; shipped models (which wrap
    the architectures) last."""
    import importlib

    _import_architectures()
    importlib.import_module("lightfer.models.shipped")


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def preprocess_crops(crops: np.ndarray, cfg: PretrainedCfg) -> np.ndarray:
    """Normalise uint8 RGB crops ``(N, S, S, 3)`` to the model input ``(N, C, S, S)`` float32.

    Grayscale uses ITU-R 601 luma, as OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)``.
    """
    x = np.asarray(crops, dtype=np.float32) / 255.0
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"crops must be (N, S, S, 3) RGB uint8, got shape {x.shape}")
    if cfg.in_chans == 1:
        x = x @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
    x = x.transpose(0, 3, 1, 2)
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)
