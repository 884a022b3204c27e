"""Explanations for ``lightfer explain``: Grad-CAM maps of each face crop, overlays, and Neural Resizer views.

The maps are Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, computed by :class:`lightfer.eval.gradcam.GradCAM`) on the
crop exactly as the model reads it (same alignment, size and channels as serving). The resizer view
shows what seed 002's Neural Resizer (after Talebi & Milanfar, "Learning to Resize Images for Computer
Vision Tasks", ICCV 2021) makes of a low-resolution face, beside a plain bilinear resize.

Default layers (:func:`explain_layer`): a CNN's last convolutional stage (mini-Xception: its last
residual block, before the class conv; ResNet / ShuffleNet: the last stage or the FFE / conv5 after
it); a Swin Transformer's second-to-last stage, because its last stage is only 2x2 tokens at 64 px
(4x4 at 112 px), too coarse to show where on the face the evidence is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightfer.defaults import DEFAULT_MODEL
from lightfer.eval.gradcam import GradCAM, default_target_layer
from lightfer.models import preprocess_crops

log = logging.getLogger(__name__)


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "backbone", model)  # a Neural-Resizer-wrapped model is explained on its backbone


def explain_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The ``(qualified name, module)`` to explain: ``name`` from ``model.named_modules()``, else the default.

    Raises:
        ValueError: ``name`` is not a module of ``model`` (the message lists the top-level candidates).
    """
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules or not name:
            stages = [n for n, m in modules.items() if n and n.count(".") <= 2 and len(list(m.children()))]
            raise ValueError(f"no layer {name!r} in {type(model).__name__}; some candidates: {', '.join(stages[:40])}")
        return name, modules[name]
    from lightfer.models.mini_xception import MiniXception
    from lightfer.models.shufflenet import ShuffleNetV2
    from lightfer.models.swinv2 import SwinTransformerV2

    inner = _inner(model)
    size = getattr(getattr(model, "pretrained_cfg", None), "input_size", 112)
    if isinstance(inner, SwinTransformerV2) and len(inner.stages) >= 2:
        layer = inner.stages[-2]
    elif isinstance(inner, ShuffleNetV2) and size < 128 and len(inner.stages) >= 2:
        layer = inner.stages[-2]  # stride 16: 4x4 at 64 px, where the last stage (stride 32) is only 2x2
    elif isinstance(inner, MiniXception):
        layer = inner.blocks[-1]  # its last residual block (the "head" after it is the class conv)
    else:
        layer = default_target_layer(model)
    return next(n for n, m in modules.items() if m is layer), layer


class LoadedModel(NamedTuple):
    """What :func:`load_explained_model` returns."""

    model: nn.Module  # in eval mode, with pretrained_cfg
    note: str  # where the weights come from, for the user
    untrained: bool  # the backbone has random weights: its maps mean nothing


def load_explained_model(model: str | None, weights: str | None = None, resizer: bool = False) -> LoadedModel:
    """The classifier to explain and a note on its weights.

    Args:
        model: a registered name, or a checkpoint file written by ``lightfer train``; None: the model of a
            ``weights`` checkpoint, else the default model (``lightfer.defaults.DEFAULT_MODEL``).
        weights: a ``lightfer train`` checkpoint, or a ``.safetensors`` / ``.pt`` state dict for ``model``.
        resizer: wrap a registered model with a Neural Resizer (ignored for checkpoints, which record their own).

    Returns:
        the model, a note on its weights, and whether the backbone's weights are random.
    """
    from lightfer.eval.evaluate import load_classifier
    from lightfer.models import create_model, get_pretrained_cfg, list_models
    from lightfer.train.checkpoint import CheckpointError, load_checkpoint, load_model_from_checkpoint

    ckpt = Path(model) if model is not None and Path(model).is_file() else None
    if ckpt is None and weights is not None and not weights.endswith(".safetensors"):
        try:
            state = load_checkpoint(weights)
        except CheckpointError:
            state = {}
        if "model_name" in state:
            if model is not None and state["model_name"] != model:
                raise ValueError(f"{weights} is a checkpoint of {state['model_name']!r}, not of {model!r}")
            ckpt = Path(weights)
    if ckpt is not None:
        net = load_model_from_checkpoint(ckpt)
        if resizer and not hasattr(net, "resizer"):
            log.warning("%s has no Neural Resizer; --resizer is ignored for a checkpoint", ckpt)
        return LoadedModel(net, f"trained weights from {ckpt}", False)
    model = model or DEFAULT_MODEL
    kwargs = {"resizer": True} if resizer else {}
    if weights is not None:
        return LoadedModel(load_classifier(model, weights, **kwargs), f"weights from {weights}", False)
    if model not in list_models():
        raise FileNotFoundError(f"{model!r} is neither a file nor a registered model ({', '.join(list_models())})")
    if get_pretrained_cfg(model).loader is None:
        return LoadedModel(create_model(model, **kwargs).eval(), f"{model} has no trained weights: RANDOM weights, "
                           "a smoke test only (the maps mean nothing)", True)
    net = create_model(model, pretrained=True, **kwargs).eval()
    if resizer:
        return LoadedModel(net, f"pretrained {model}, but its Neural Resizer has RANDOM weights "
                           "(close to a bilinear resize)", False)
    return LoadedModel(net, f"pretrained {model}", False)


def heat_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a map ``(h, w)`` in [0, 1] (bilinearly resized to the image) over RGB uint8 ``(H, W, 3)``.

    Colours come from a matplotlib colormap (``jet``: cold blue -> hot red).
    """
    import matplotlib

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        t = torch.from_numpy(cam)[None, None]
        cam = F.interpolate(t, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = matplotlib.colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0  # (H, W, 3)
    return np.uint8(np.clip((1 - alpha) * image.astype(np.float32) + alpha * heat, 0, 255))


def _fit(crop: np.ndarray, s: int) -> np.ndarray:
    """Resize an RGB uint8 crop to ``(s, s, 3)`` exactly as :meth:`ExpressionClassifier.prepare` does."""
    import cv2

    if crop.shape[:2] == (s, s):
        return crop
    return cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA if min(crop.shape[:2]) > s else cv2.INTER_LINEAR)


def model_view(crop: np.ndarray, in_chans: int) -> np.ndarray:
    """An RGB uint8 crop ``(S, S, 3)`` as the model reads it: ITU-R 601 gray (as 3 channels) for 1-channel models."""
    if in_chans != 1:
        return crop
    gray = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(np.uint8(np.clip(gray + 0.5, 0, 255))[..., None], 3, axis=2)


@dataclass
class FaceExplanation:
    """One face: its crop as the model sees it, the Grad-CAM map and the prediction."""

    crop: np.ndarray  # (S, S, 3) uint8, gray repeated for 1-channel models
    cam: np.ndarray  # (S, S) float32 in [0, 1]
    probs: dict[str, float]  # class -> probability
    label: str  # predicted class
    target: str  # class the map explains (predicted unless asked)
    box: np.ndarray | None = None  # (4,) x1, y1, x2, y2 in the image, None for a given crop
    resizer_views: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (title, RGB uint8) panels
    untrained: bool = False  # the model has random weights: titles say so

    @property
    def confidence(self) -> float:
        """Probability of the predicted class."""
        return self.probs[self.label]

    def title(self, sep: str = "; ") -> str:
        """``happy 97.1%``, the explained class when it is not the predicted one, and a random-weights mark."""
        parts = [f"{self.label} {self.confidence * 100:.1f}%"]
        if self.target != self.label:
            parts = [f"Grad-CAM for {self.target} ({self.probs[self.target] * 100:.1f}%)", f"predicted {parts[0]}"]
        return sep.join(parts + (["RANDOM WEIGHTS"] if self.untrained else []))


class Explainer:
    """Grad-CAM of face crops for a classifier carrying ``pretrained_cfg``.

    Args:
        model: a classifier from :func:`lightfer.models.create_model` or a training checkpoint.
        layer: qualified module name to explain (default :func:`explain_layer`).
        device: torch device.
        untrained: the model has random weights (every title then says so).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, device: str = "cpu",
                 untrained: bool = False) -> None:
        from lightfer.classifier import ExpressionClassifier

        self.clf = ExpressionClassifier(model, backend="torch", device=device)  # the serving preprocessing
        self.model, self.cfg, self.device = self.clf.model, self.clf.cfg, device
        self.layer_name, layer_module = explain_layer(self.model, layer)
        self.cam = GradCAM(self.model, layer_module)
        self.untrained = untrained

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in output order."""
        return self.cfg.classes

    def class_index(self, label: str | int) -> int:
        """Index of a class given by name (case-insensitive) or number."""
        names = [c.lower() for c in self.classes]
        if isinstance(label, str) and label.lower() in names:
            return names.index(label.lower())
        if str(label).isdigit() and int(label) < len(names):
            return int(label)
        raise ValueError(f"unknown class {label!r}; the model's classes are {', '.join(self.classes)}")

    def explain(self, crops: Sequence[np.ndarray], target: str | int | None = None,
                boxes: Sequence[np.ndarray] | None = None) -> list[FaceExplanation]:
        """RGB uint8 face crops ``[(h, w, 3)]`` (resized to the model input) -> one explanation each."""
        if len(crops) == 0:
            return []
        s = self.cfg.input_size
        fixed = [_fit(np.ascontiguousarray(c), s) for c in crops]  # as ExpressionClassifier.prepare resizes
        x = torch.from_numpy(preprocess_crops(np.stack(fixed), self.cfg)).to(self.device)  # (N, C, S, S)
        with torch.inference_mode():
            probs = torch.softmax(self.model(x).float(), dim=1).cpu().numpy()  # (N, K)
        idx = None if target is None else self.class_index(target)
        cams = self.cam(x, idx).cpu().numpy()  # (N, S, S)
        out = []
        for i, crop in enumerate(fixed):
            p = {c: float(v) for c, v in zip(self.classes, probs[i])}
            label = self.classes[int(probs[i].argmax())]
            exp = FaceExplanation(crop=model_view(crop, self.cfg.in_chans), cam=cams[i].astype(np.float32), probs=p,
                                  label=label, target=label if idx is None else self.classes[idx],
                                  box=None if boxes is None else np.asarray(boxes[i], np.float32),
                                  untrained=self.untrained)
            if hasattr(self.model, "resizer"):
                exp.resizer_views = self.resizer_views(x[i : i + 1])
            out.append(exp)
        return out

    def resizer_views(self, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
        """Model input ``(1, C, h, w)`` -> panels: the input, a bilinear resize and the resizer output (S x S)."""
        resizer = self.model.resizer
        size = (resizer.out_size, resizer.out_size)
        with torch.inference_mode():
            bilinear = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            learned = resizer(x)
        h, w = x.shape[-2:]
        return [(f"input crop {w}x{h}", self._to_image(x)), (f"bilinear {size[1]}x{size[0]}", self._to_image(bilinear)),
                (f"Neural Resizer {size[1]}x{size[0]}", self._to_image(learned))]

    def _to_image(self, x: torch.Tensor) -> np.ndarray:
        mean = torch.tensor(self.cfg.mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        std = torch.tensor(self.cfg.std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        img = ((x * std + mean).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def _save(fig: object, path: Path, dpi: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)  # type: ignore[attr-defined]
    return path


def save_face_figure(exp: FaceExplanation, path: str | Path, *, layer: str = "", dpi: int = 100) -> Path:
    """PNG: the crop with its heat-map overlay, titled with the label and probability."""
    from matplotlib.figure import Figure

    lines = exp.title("\n").split("\n") + ([f"layer {layer}"] if layer else [])
    fig = Figure(figsize=(3.2, 3.0 + 0.16 * len(lines)))
    ax = fig.add_axes((0.02, 0.02, 0.96, 2.9 / (3.0 + 0.16 * len(lines))))
    ax.imshow(heat_overlay(exp.crop, exp.cam), interpolation="bilinear")
    ax.set_axis_off()
    fig.suptitle("\n".join(lines), fontsize=8, y=0.995, va="top")
    return _save(fig, Path(path), dpi)


def save_overview(image: np.ndarray, exps: Sequence[FaceExplanation], path: str | Path, *, dpi: int = 100) -> Path:
    """PNG: the whole image with numbered face boxes, and each face's overlay inset below it."""
    from matplotlib.figure import Figure

    from lightfer.draw import annotate
    from lightfer.structures import Face

    faces = [Face(box=e.box, score=1.0, landmarks=np.zeros((0, 2), np.float32), label=e.label, probs=e.probs)
             for e in exps if e.box is not None]
    shown = annotate(image, faces, landmarks=False) if faces else image
    cols = max(4, min(len(exps), 6))  # thumbnails are at most a quarter of the width
    rows = -(-len(exps) // cols)
    h, w = image.shape[:2]
    width = 8.0  # inches
    img_h, row_h = width * h / w, width / cols + 0.3  # a thumbnail row: the square crop + its title
    fig = Figure(figsize=(width, img_h + rows * row_h))
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[img_h] + [row_h] * rows, left=0.01, right=0.99,
                            top=0.99, bottom=0.01, hspace=0.15, wspace=0.05)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(shown)
    ax.set_axis_off()
    for i, e in enumerate(exps):
        if e.box is not None:
            ax.text(float(e.box[0]), float(e.box[3]), f"#{i}", color="white", fontsize=9, va="top",
                    bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0))
        sub = fig.add_subplot(grid[1 + i // cols, i % cols])
        sub.imshow(heat_overlay(e.crop, e.cam), interpolation="bilinear")
        sub.set_title(f"#{i} {e.label} {e.confidence * 100:.0f}%" + (" (random)" if e.untrained else ""), fontsize=8)
        sub.set_axis_off()
    return _save(fig, Path(path), dpi)


def save_resizer_figure(exp: FaceExplanation, path: str | Path, *, dpi: int = 100) -> Path:
    """PNG: input crop, plain bilinear resize and Neural Resizer output side by side (same display size)."""
    from matplotlib.figure import Figure

    if not exp.resizer_views:
        raise ValueError("this explanation has no Neural Resizer views (the model has no resizer)")
    n = len(exp.resizer_views)
    fig = Figure(figsize=(2.6 * n, 2.9))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05)
    for i, (title, img) in enumerate(exp.resizer_views):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return _save(fig, Path(path), dpi)
