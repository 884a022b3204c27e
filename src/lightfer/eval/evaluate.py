"""Score an expression classifier on a dataset split: metrics, cost and the report of ``lightfer eval``.

The model input is made exactly as serving makes it (:func:`lightfer.data.transforms.crops_to_input`
mirrors ``ExpressionClassifier.prepare``), and dataset labels are matched to the model's
classes by canonical name (classes the model lacks are dropped, with a warning). When samples were
dropped, the report's ``with_dropped`` block scores the whole split as if every dropped sample were a
miss: e.g. a 7-class FER2013 model on the 8-class FER+ test set (contempt counted as errors).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightfer.data.dataset import FERDataset
from lightfer.data.labels import LabelError, canonical_name
from lightfer.data.transforms import crops_to_input
from lightfer.eval.metrics import classification_metrics, paired_comparison

log = logging.getLogger(__name__)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (or a dict holding 'model'), got {type(obj).__name__}")
    return obj


def load_classifier(model: str, weights: str | None = None, *, use_ema: bool = True,
                    **create_kwargs: Any) -> nn.Module:
    """A classifier in eval mode from a registered name or a training checkpoint.

    Args:
        model: a registered model name (its pretrained weights load unless ``weights`` is given),
            or a checkpoint file written by ``lightfer train`` (``model_name``, ``model``, ``pretrained_cfg``).
        weights: a ``.safetensors`` / ``.pt`` state dict (or a dict with ``model``) for the named model.
        use_ema: for a checkpoint of a run with ``ema_decay``: its EMA weights (default) or, if False, the
            live weights of the same epoch.
        **create_kwargs: ``create_model`` overrides (``classes``, ``in_chans``, ``input_size``).
    """
    from lightfer.models import create_model, list_models

    path = Path(model)
    if path.is_file():
        from lightfer.train.checkpoint import load_model_from_checkpoint

        return load_model_from_checkpoint(path, use_ema=use_ema)
    if model not in list_models():
        raise FileNotFoundError(f"{model!r} is neither a file nor a registered model ({', '.join(list_models())})")
    if weights is None:
        return create_model(model, pretrained=True, **create_kwargs).eval()
    net = create_model(model, **create_kwargs)
    wpath = Path(weights)
    if not wpath.is_file():
        raise FileNotFoundError(f"{wpath}: weights file not found")
    missing, unexpected = net.load_state_dict(_state_dict(wpath), strict=False)
    if missing or unexpected:
        raise ValueError(f"{wpath}: weights do not fit {model}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net.eval()


def align_labels(dataset: FERDataset, classes: tuple[str, ...]) -> FERDataset:
    """``dataset`` re-indexed into the model's ``classes`` (by name; absent classes dropped)."""
    try:
        [canonical_name(c) for c in classes]
    except LabelError:
        if len(classes) != dataset.num_classes:
            raise LabelError(f"model classes {classes} are not expression names and their number differs from "
                             f"{dataset.name}'s {dataset.classes}") from None
        log.warning("model classes %s are not expression names; assuming the dataset's order %s", classes,
                    dataset.classes)
        return dataset
    return dataset.remap(classes, drop_missing=True)


def with_dropped(report: dict[str, Any], dataset: FERDataset) -> dict[str, Any]:
    """Accuracy and UAR over all of ``dataset``'s classes, samples of classes the model lacks counted as misses.

    ``report`` is :func:`evaluate_classifier`'s (or :func:`classification_metrics`') output on the samples
    that were kept; UAR averages recall over every class with samples in ``dataset`` (0 for dropped ones).
    """
    counts = np.bincount(dataset.labels, minlength=dataset.num_classes)
    kept = {canonical_name(c) for c in report["classes"]}
    dropped = {c: int(n) for c, n in zip(dataset.classes, counts) if n and canonical_name(c) not in kept}
    recalls = [r["recall"] for r in report["per_class"].values() if r["support"] > 0]
    n_cls = int((counts > 0).sum())
    total = int(counts.sum())
    return {"num_samples": total, "num_classes": n_cls, "dropped_classes": dropped,
            "accuracy": report["accuracy"] * report["num_samples"] / total if total else 0.0,
            "uar": float(sum(recalls) / n_cls) if n_cls else 0.0}


def predict_probs(model: nn.Module, images: np.ndarray, batch_size: int = 256, tta_flip: bool = False,
                  backend: str = "torch", precision: str = "auto") -> np.ndarray:
    """Softmax probabilities ``(N, C)`` of uint8 crops ``(N, H, W[, 3])`` (optionally averaged with mirrors).

    ``backend="onnx"`` runs the model as serving does, through :class:`lightfer.classifier.ExpressionClassifier`
    in ONNX Runtime with ``precision`` (``"auto"`` takes a shipped int8 model where there is one)."""
    cfg = model.pretrained_cfg
    if backend == "onnx":
        from lightfer.classifier import ExpressionClassifier, softmax

        clf = ExpressionClassifier(model, backend="onnx", threads=torch.get_num_threads(), batch_size=batch_size,
                                   tta_flip=tta_flip, precision=precision)
        logits = [clf.logits(crops_to_input(images[i:i + batch_size], cfg)) for i in range(0, len(images), batch_size)]
        return softmax(np.concatenate(logits)).astype(np.float32) if logits else np.zeros((0, len(cfg.classes)),
                                                                                         np.float32)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    out = []
    device = next(model.parameters(), torch.empty(0)).device  # the batches go where the model is (a GPU for teacher logits)
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(crops_to_input(images[i:i + batch_size], cfg)).to(device)
            p = model(x).float().softmax(1)
            if tta_flip:
                p = (p + model(x.flip(-1)).float().softmax(1)) / 2
            out.append(p.cpu().numpy())
    n_cls = len(cfg.classes)
    return np.concatenate(out) if out else np.zeros((0, n_cls), np.float32)


def model_cost(model: nn.Module, latency: bool = True, repeats: int = 30, onnx: bool = False) -> dict[str, Any]:
    """Parameters, FLOPs (2 x MACs, batch 1) and batch-1 latency in ms per face (eager; ONNX Runtime if asked)."""
    from lightfer.eval.profile import profile_module

    prof = profile_module(model, getattr(model, "model_name", type(model).__name__), latency=latency,
                          onnx=latency and onnx, repeats=repeats)
    cost: dict[str, Any] = {"params": prof.params, "flops": prof.flops,
                            "input": [1, prof.in_chans, prof.input_size, prof.input_size],
                            "threads": prof.threads, "backend": "torch eager", "latency_ms": prof.torch_ms}
    if prof.onnx_ms is not None:
        cost["onnx_latency_ms"] = prof.onnx_ms
    return cost


def _precision_used(model: nn.Module, backend: str, precision: str) -> str:
    """What :func:`predict_probs` runs: ``"int8"`` where ONNX Runtime takes the model's shipped quantisation."""
    from lightfer.classifier import int8_file

    return "int8" if backend == "onnx" and int8_file(model, precision) is not None else "fp32"


def check_same_samples(a: FERDataset, b: FERDataset) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` hold the same samples in the same order (other crops allowed).

    Same length, the same label name per sample and, where both carry ids, the same ids."""
    if len(a) != len(b):
        raise ValueError(f"{b.name}: {len(b)} samples, but {a.name} has {len(a)}; a paired comparison needs the "
                         "same samples (prepare both crop sets from the same source and split)")
    names_a = np.asarray([canonical_name(a.classes[i]) for i in a.labels])
    names_b = np.asarray([canonical_name(b.classes[i]) for i in b.labels])
    if len(a) and not (names_a == names_b).all():
        i = int(np.flatnonzero(names_a != names_b)[0])
        raise ValueError(f"{b.name}: sample {i} is labelled {names_b[i]!r}, in {a.name} {names_a[i]!r}: not the "
                         "same samples in the same order")
    keys_a, keys_b = _sample_keys(a), _sample_keys(b)
    if keys_a is not None and keys_b is not None and keys_a != keys_b:
        i = next(k for k, (x, y) in enumerate(zip(keys_a, keys_b)) if x != y)
        raise ValueError(f"{b.name}: sample {i} is {b.ids[i]!r}, in {a.name} {a.ids[i]!r}: not the same samples")


def _sample_keys(ds: FERDataset) -> list[str] | None:
    """Ids comparable across crop sets of one source: the last two path parts (``class/file.png`` of an image
    folder, ``fer2013.csv.gz:LINE`` as is); ``None`` when the ids are the placeholders ``NAME#i``."""
    if not ds.ids or all(re.fullmatch(r".*#\d+", s) for s in ds.ids):
        return None
    return ["/".join(s.replace("\\", "/").split("/")[-2:]) for s in ds.ids]


def compare_classifiers(model_a: nn.Module, model_b: nn.Module, dataset: FERDataset, *, tta_a: bool = False,
                        tta_b: bool = False, batch_size: int = 256, probs_a: np.ndarray | None = None,
                        dataset_b: FERDataset | None = None, backend: str = "torch",
                        precision: str = "auto") -> dict[str, Any]:
    """Paired accuracy comparison of two models on the same samples of ``dataset`` (exact McNemar test).

    Both models must have the same class set (order may differ); samples of classes they lack are dropped
    from both. ``probs_a`` ``(N, C)``: model A's probabilities on those samples when already computed.
    ``dataset_b``: model B reads its crops from here instead (e.g. crops of another size or crop mode); it
    must hold the same samples in the same order (:func:`check_same_samples`). ``backend`` / ``precision``:
    as :func:`predict_probs`, for both models.
    Returns :func:`lightfer.eval.metrics.paired_comparison`'s dict plus the TTA flags.
    """
    ca, cb = tuple(model_a.pretrained_cfg.classes), tuple(model_b.pretrained_cfg.classes)
    names_a, names_b = ({canonical_name(c) for c in cls} for cls in (ca, cb))
    if names_a != names_b:
        raise ValueError(f"cannot compare models with different classes: {ca} vs {cb}")
    if dataset_b is not None:
        check_same_samples(dataset, dataset_b)
    correct = []
    for model, classes, tta, data in ((model_a, ca, tta_a, dataset), (model_b, cb, tta_b, dataset_b or dataset)):
        ds = align_labels(data, classes)
        known = probs_a if model is model_a and probs_a is not None else None
        probs = known if known is not None else predict_probs(model.eval(), ds.images, batch_size, tta, backend,
                                                              precision)
        correct.append(probs.argmax(1) == ds.labels)
    out = paired_comparison(correct[0], correct[1])
    out.update({"tta_a": tta_a, "tta_b": tta_b})
    return out


def evaluate_classifier(model: nn.Module, dataset: FERDataset, *, batch_size: int = 256, tta_flip: bool = False,
                        latency: bool = True, onnx_latency: bool = False, compare: nn.Module | None = None,
                        compare_tta: bool = False, compare_dataset: FERDataset | None = None,
                        backend: str = "torch", precision: str = "auto") -> dict[str, Any]:
    """The full report of ``lightfer eval`` for one dataset split (see :mod:`lightfer.eval.metrics`).

    ``backend="onnx"`` scores the model as served, in ONNX Runtime (``precision``: see :func:`predict_probs`).

    With ``compare`` (a second model with the same classes) the report gains ``compare``: the paired test of
    :func:`compare_classifiers`, reusing this model's predictions; ``compare_dataset`` gives that model its
    own crops of the same samples."""
    cfg = model.pretrained_cfg
    ds = align_labels(dataset, tuple(cfg.classes))
    if len(ds) == 0:
        raise ValueError(f"{dataset.name}: no samples of the model's classes {cfg.classes}")
    t0 = time.perf_counter()
    probs = predict_probs(model.eval(), ds.images, batch_size, tta_flip, backend, precision)
    wall = time.perf_counter() - t0
    report = classification_metrics(ds.labels, probs, list(cfg.classes))
    report.update({
        "model": getattr(model, "model_name", type(model).__name__), "dataset": dataset.name,
        "dataset_size": len(dataset), "evaluated": len(ds), "dropped": len(dataset) - len(ds),
        "tta_flip": tta_flip, "input_size": cfg.input_size, "in_chans": cfg.in_chans, "backend": backend,
        "precision": _precision_used(model, backend, precision),
        "throughput_img_s": round(len(ds) / wall, 1) if wall > 0 else None,
        "batch_size": batch_size,
    })
    if len(ds) < len(dataset):
        report["with_dropped"] = with_dropped(report, dataset)
    if compare is not None:
        report["compare"] = compare_classifiers(model, compare, dataset, tta_a=tta_flip, tta_b=compare_tta,
                                                batch_size=batch_size, probs_a=probs, dataset_b=compare_dataset,
                                                backend=backend, precision=precision)
    if "face_found" in ds.meta:
        found = np.asarray(ds.meta["face_found"])
        report["face_found_rate"] = float(found.mean()) if len(found) else None
    report["cost"] = model_cost(model, latency=latency, onnx=onnx_latency)
    return report
