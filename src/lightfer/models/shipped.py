"""Models trained by this project and shipped inside the package (``lightfer/weights/``).

Each shipped model is a pair of files: ``<name>.safetensors`` (the state dict) and ``<name>.json``
(architecture name and keyword arguments, the pretrained config the weights were trained with —
input size, channels, normalisation, classes, crop mode and margin — the weights' sha256, and the
provenance: data, recipe, command, measured accuracy). Every pair found is registered under
``<name>``, so ``create_model(name, pretrained=True)`` works like for any other model.
:func:`ship_checkpoint` writes such a pair from a ``lightfer train`` checkpoint, :func:`ship_ensemble` one for a
probability-averaging ensemble of several (architecture ``"ensemble"``, its members in ``arch_kwargs``).
:func:`weight_soup` averages the weights of networks of one lineage into a checkpoint that ships like a trained one.
:func:`ship_int8` adds a third file, ``<name>.int8.onnx``: the weights quantised to int8 for ONNX Runtime
(recorded under ``int8`` in the ``.json``), which the ONNX Runtime backend serves by default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from lightfer.models.registry import _REGISTRY, PretrainedCfg, get_pretrained_cfg, register_model

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# superseded models whose files left the package (session 34: the wheel was 89 MB, near PyPI's 100 MB file limit);
# name -> the model that replaced it. Their files stay in git at RETIRED_AT; the model card keeps their figures.
RETIRED_AT = "5b66ef1"
RETIRED: dict[str, str] = {
    "shufflenet_v2_x0_5_fer2013_kd70": "shufflenet_v2_x0_5_fer2013",
    "shufflenet_v2_x0_5_fer2013_ban": "shufflenet_v2_x0_5_fer2013",
    "shufflenet_v2_x0_5_fer2013_dlibkd": "shufflenet_v2_x0_5_fer2013",
    "shufflenet_v2_x1_0_fer2013_ban": "shufflenet_v2_x1_0_fer2013",
    "shufflenet_v2_x1_0_fer2013_dlibkd": "shufflenet_v2_x1_0_fer2013",
    "shufflenet_v2_x1_0_fer2013_pairkd": "shufflenet_v2_x1_0_fer2013",
    "shufflenet_v2_x1_0_ferplus_dlibkd": "shufflenet_v2_x1_0_ferplus",
}


def retired_note(name: str) -> str | None:
    """Why ``name`` is not registered, if it is a retired shipped model, with how to restore its files."""
    if name not in RETIRED or (WEIGHTS_DIR / f"{name}.json").is_file():
        return None
    return (f"{name!r} was retired from the package (superseded by {RETIRED[name]!r}; its figures stay in "
            f"docs/MODEL_CARD.md); in a source checkout `git checkout {RETIRED_AT} -- "
            f"src/lightfer/weights/{name}.*` restores its files")


# architecture keywords that only shape a training run (the shipped state dict holds every weight; ``rep`` branches are
# folded into the plain network on loading): dropped when shipping
TRAINING_ONLY_KWARGS: tuple[str, ...] = ("pretrained_backbone", "rep")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_loader(weights: Path, sha256: str):
    def load(model: nn.Module) -> None:
        from safetensors.torch import load_file

        if not weights.exists():
            raise FileNotFoundError(f"{weights}: shipped weights missing from the package")
        got = _sha256(weights)
        if got != sha256:
            raise RuntimeError(f"{weights}: sha256 {got} does not match {sha256} recorded in its .json")
        model.load_state_dict(load_file(str(weights)), strict=True)

    return load


def _make_member_loader(names: list[str]):
    """Loader of an ensemble shipped by reference: each member gets its own shipped weights (their sha256 checked
    by that member's loader), so the package holds every file once."""
    def load(model: nn.Module) -> None:
        for name, member in zip(names, model.members):
            if name not in _REGISTRY or _REGISTRY[name].cfg.loader is None:
                raise FileNotFoundError(f"ensemble member {name!r} is not a shipped model of this package")
            _REGISTRY[name].cfg.loader(member)

    return load


def _register(meta_path: Path) -> None:
    meta = json.loads(meta_path.read_text())
    name, arch = meta["name"], meta["architecture"]
    if name in _REGISTRY:
        return
    if arch == "ensemble":  # a composite of registered architectures (lightfer.models.ensemble)
        from lightfer.models.ensemble import build_ensemble as arch_fn
    else:
        arch_fn = _REGISTRY[arch].fn if arch in _REGISTRY else None
    if arch_fn is None:
        log.warning("%s: unknown architecture %r; not registered", meta_path, arch)
        return
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)} - {"loader"}
    cfg_dict = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["pretrained_cfg"].items() if k in fields}
    int8 = meta.get("int8") or {}
    if int8:
        cfg_dict.update(int8_onnx=str(meta_path.parent / int8["file"]), int8_sha256=int8["sha256"],
                        int8_state=int8["state"], int8_any_cpu=bool(int8.get("reduce_range", False)))
    refs = meta.get("member_models")
    loader = _make_member_loader(refs) if refs else _make_loader(meta_path.with_suffix(".safetensors"), meta["sha256"])
    cfg = PretrainedCfg(**{**cfg_dict, "loader": loader})
    arch_kwargs = dict(meta.get("arch_kwargs", {}))
    resizer = arch_kwargs.pop("resizer", None)
    backbone_size = int(meta.get("backbone_input_size") or cfg.input_size)

    def entry(num_classes: int = cfg.num_classes, in_chans: int = cfg.in_chans, **kwargs: Any) -> nn.Module:
        kwargs.setdefault("img_size", backbone_size)  # stems and windows are planned for the trained size
        net = arch_fn(num_classes=num_classes, in_chans=in_chans, **{**arch_kwargs, **kwargs})
        if resizer:  # built here, so that the shipped state dict (resizer + backbone) loads in one piece
            from lightfer.models.resizer import NeuralResizer, ResizedModel, resizer_cfg

            return ResizedModel(NeuralResizer(in_chans, backbone_size, resizer_cfg(resizer)), net)
        return net

    entry.__name__ = name
    entry.__doc__ = cfg.description
    register_model(cfg)(entry)


def register_shipped() -> None:
    """Register every ``lightfer/weights/*.json`` model (runs when this module is first imported, whoever
    imports it: the architectures they wrap are imported first)."""
    from lightfer.models.registry import _import_architectures

    _import_architectures()
    if WEIGHTS_DIR.is_dir():
        for meta in sorted(WEIGHTS_DIR.glob("*.json")):
            _register(meta)


def ship_checkpoint(checkpoint: str | Path, name: str, *, description: str, provenance: dict[str, Any],
                    crop_mode: str | None = None, crop_margin: float | None = None, tta_flip: bool | None = None,
                    out_dir: Path = WEIGHTS_DIR, use_ema: bool = True, serve_size: int | None = None,
                    fp16: bool = False) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.json`` from a ``lightfer train`` checkpoint (its EMA weights if
    kept and ``use_ema``, else the live weights of the saved epoch).

    ``crop_mode`` / ``crop_margin`` / ``tta_flip`` override the checkpoint's pretrained config (how the model
    is served: they must match how its published numbers were measured). ``serve_size`` serves crops of that side
    to a model trained on crops resized to a larger input (e.g. 64 px crops upsampled to 112): the architecture
    must take ``resample_to``, which is set to the trained input size, so the network sees the same pixels.
    ``fp16`` stores floating-point tensors in half precision (half the file; loading casts them back to float32)."""
    import torch
    from safetensors.torch import save_file

    from lightfer.train.checkpoint import load_checkpoint, load_model_from_checkpoint

    state = load_checkpoint(checkpoint)
    model = load_model_from_checkpoint(checkpoint, use_ema=use_ema)
    arch_kwargs = {k: v for k, v in state.get("model_kwargs", {}).items() if k not in TRAINING_ONLY_KWARGS}
    if serve_size is not None and serve_size != model.pretrained_cfg.input_size:
        if not hasattr(model, "resample_to"):
            raise ValueError(f"{checkpoint}: {state['model_name']} cannot resample its input; serve it at "
                             f"{model.pretrained_cfg.input_size} px")
        arch_kwargs["resample_to"] = int(model.pretrained_cfg.input_size)
        model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, input_size=int(serve_size))
    cfg = dataclasses.replace(
        model.pretrained_cfg,
        weights=f"lightfer package: weights/{name}.safetensors",
        license="MIT",
        description=description,
        **({"crop_mode": crop_mode} if crop_mode else {}),
        **({"crop_margin": crop_margin} if crop_margin is not None else {}),
        **({"tta_flip": tta_flip} if tta_flip is not None else {}),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.safetensors"
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(weights))
    arch = state["model_name"]
    base = get_pretrained_cfg(arch)
    meta = {
        "name": name,
        "architecture": arch,
        "arch_kwargs": arch_kwargs,
        "pretrained_cfg": cfg.to_dict(),
        "sha256": _sha256(weights),
        "base_input_size": base.input_size,
        "backbone_input_size": int(model.resizer.out_size) if hasattr(model, "resizer") else cfg.input_size,
        "provenance": provenance,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return weights


def split_member(spec: str) -> tuple[str, str]:
    """Ensemble member syntax: ``path`` / ``path@ema`` / ``path@live`` / a model name -> (path or name, ``""`` |
    ``"ema"`` | ``"live"``)."""
    path, _, which = spec.partition("@")
    if which not in ("", "ema", "live"):
        raise ValueError(f"ensemble member {spec!r}: the suffix must be @ema or @live")
    return path, which


def _ensemble_member(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``runs/x/best.pt`` (its EMA), ``runs/x/best.pt@live`` (its live weights) or a registered model name with
    pretrained weights -> (model in eval mode, ``{"architecture", "kwargs"}`` that rebuilds it without weights)."""
    from lightfer.models.registry import create_model

    path, which = split_member(spec)
    if Path(path).is_file():
        from lightfer.train.checkpoint import load_checkpoint, load_model_from_checkpoint

        state = load_checkpoint(path)
        model = load_model_from_checkpoint(path, use_ema=which != "live")
        arch = state["model_name"]
        kwargs = {k: v for k, v in state.get("model_kwargs", {}).items() if k not in TRAINING_ONLY_KWARGS}
    else:
        if which:
            raise ValueError(f"ensemble member {spec!r}: @{which} applies to checkpoint files only")
        model = create_model(path, pretrained=True)
        meta_path = WEIGHTS_DIR / f"{path}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"architecture": path}
        arch, kwargs = meta["architecture"], dict(meta.get("arch_kwargs", {}))
    if "resizer" in kwargs or arch == "ensemble":
        raise ValueError(f"ensemble member {spec!r}: resizer models and nested ensembles are not supported")
    return model.eval(), {"architecture": arch, "kwargs": kwargs}


def ensemble_of(members: list[str]) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A probability-averaging :class:`~lightfer.models.ensemble.Ensemble` of ``members`` (checkpoints,
    ``checkpoint@live``, or registered names with pretrained weights), in eval mode, built in memory ->
    ``(ensemble, [{"architecture", "kwargs"[, "input_affine"]}, ...])``. Its ``pretrained_cfg`` is the first
    member's (``tta_flip`` off): input ``(B, C, S, S)`` normalised as the first member, output ``(B, K)`` log mean
    probability. Every member must take the same crop (size, channels, crop mode and margin) and predict the same
    classes in the same order; a member with other normalisation statistics gets an ``input_affine`` that
    re-normalises its input. Used by :func:`ship_ensemble` and for ensemble teachers (``teacher.name: a+b``)."""
    from lightfer.models.ensemble import Ensemble, renormalize_affine

    if not members:
        raise ValueError("ensemble: no members")
    built = [_ensemble_member(m) for m in members]
    keys = ("input_size", "in_chans", "classes", "crop_mode", "crop_margin")
    first = built[0][0].pretrained_cfg
    affine = []
    for spec, (model, arch) in zip(members, built):
        pc = model.pretrained_cfg
        diff = [k for k in keys if getattr(pc, k) != getattr(first, k)]
        if diff:
            raise ValueError(f"ensemble member {spec!r} differs from {members[0]!r} in {', '.join(diff)}")
        a = renormalize_affine(first.mean, first.std, pc.mean, pc.std)  # other statistics: re-normalised inside
        if a is not None:
            arch["input_affine"] = {"scale": a[0], "shift": a[1]}
        affine.append(a)
    net = Ensemble([m for m, _ in built], affine).eval()
    net.pretrained_cfg = dataclasses.replace(first, tta_flip=False)
    return net, [arch for _, arch in built]


def ship_ensemble(members: list[str], name: str, *, description: str, provenance: dict[str, Any],
                  tta_flip: bool | None = None, out_dir: Path = WEIGHTS_DIR) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.json`` for a probability-averaging :class:`~lightfer.models.ensemble.
    Ensemble` of ``members`` (checkpoints, ``checkpoint@live``, or registered names with pretrained weights).
    When every member is a shipped (registered, pretrained) model, only the ``.json`` is written: it names them
    (``member_models``) and loading takes each member's own weights file, so no weight is stored twice. Returns the
    weights path (the ``.json`` for such a reference ensemble).

    Every member must take the same crop (size, channels, crop mode and margin) and predict the same classes in
    the same order; the ensemble is normalised as the first member, and a member with other statistics gets an
    ``input_affine`` that re-normalises its input. ``tta_flip`` sets how the ensemble is served (default: off)."""
    import torch
    from safetensors.torch import save_file

    net, archs = ensemble_of(members)
    cfg = dataclasses.replace(net.pretrained_cfg, weights=f"lightfer package: weights/{name}.safetensors",
                              license="MIT", description=description, tta_flip=bool(tta_flip))
    out_dir.mkdir(parents=True, exist_ok=True)
    by_reference = all(not Path(split_member(m)[0]).is_file() and m in _REGISTRY and _REGISTRY[m].cfg.loader is not None
                       for m in members)
    weights = out_dir / f"{name}.{'json' if by_reference else 'safetensors'}"
    if not by_reference:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)},
                  str(weights))
    else:
        cfg = dataclasses.replace(cfg, weights=f"lightfer package: the weights of {', '.join(members)}")
    meta = {
        "name": name,
        "architecture": "ensemble",
        "arch_kwargs": {"members": archs},
        **({"member_models": list(members)} if by_reference else {}),
        "pretrained_cfg": cfg.to_dict(),
        "sha256": None if by_reference else _sha256(weights),
        "base_input_size": cfg.input_size,
        "backbone_input_size": cfg.input_size,
        "provenance": {**provenance, "members": list(members)},
    }
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return weights


def weight_soup(members: list[str], weights: list[float] | None = None) -> dict[str, Any]:
    """A weight-space average ("model soup") of ``members`` -> a checkpoint dict that ``lightfer eval``,
    ``scripts/ship_model.py`` and ensembles read like a training checkpoint (``model_name``, ``model_kwargs``,
    ``pretrained_cfg``, ``model``; ``ema`` is ``None``; ``soup`` records the members and weights).

    Members take the ensemble syntax (``runs/x/best.pt`` for its EMA, ``...@live``, or a shipped model name) and
    must share the architecture (the same tensor shapes), the input (size, channels, normalisation) and the classes.
    Every floating-point tensor of the state dict is averaged with ``weights`` (normalised to sum 1; default equal)
    — parameters *and* BatchNorm running statistics, as :class:`~lightfer.train.builders.ModelEma` averages them;
    integer buffers (batch counters) are the first member's. An average is only meaningful for networks of one
    lineage (e.g. a fine-tune and the weights it started from), which stay in one basin of the loss; the
    preprocessing and serving settings are the first member's."""
    import torch

    if len(members) < 2:
        raise ValueError("weight_soup: give at least two members")
    w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
    if len(w) != len(members) or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"weight_soup: {len(w)} weights for {len(members)} members; they must be >= 0, not all 0")
    w = [v / sum(w) for v in w]
    built = [_ensemble_member(m) for m in members]
    first, first_arch = built[0]
    keys = ("input_size", "in_chans", "classes", "mean", "std")
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    states = []
    for spec, (model, arch) in zip(members, built):
        state = model.state_dict()
        diff = [k for k in keys if getattr(model.pretrained_cfg, k) != getattr(first.pretrained_cfg, k)]
        if arch["architecture"] != first_arch["architecture"] or {k: v.shape for k, v in state.items()} != shapes:
            diff.insert(0, "architecture or tensor shapes")
        if diff:
            raise ValueError(f"weight_soup: {spec!r} differs from {members[0]!r} in {', '.join(diff)}")
        states.append(state)
    soup: dict[str, torch.Tensor] = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            soup[key] = sum(wi * s[key].detach().float() for wi, s in zip(w, states)).to(ref.dtype)
        else:
            soup[key] = ref.detach().clone()
    pc = first.pretrained_cfg
    kwargs = {k: v for k, v in first_arch["kwargs"].items() if k not in TRAINING_ONLY_KWARGS}
    return {"model_name": first_arch["architecture"], "model_kwargs": kwargs,
            "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in pc.to_dict().items() if k in keys},
            "model": soup, "ema": None, "soup": {"members": list(members), "weights": w}}


def ship_int8(name: str, data: str, *, split: str = "train", num: int = 512, seed: int = 0,
              evaluation: dict[str, Any] | None = None, out_dir: str | Path | None = None,
              reduce_range: bool = False) -> Path:
    """Quantise shipped model ``name`` to int8 and ship it beside its weights as ``<name>.int8.onnx``.

    Calibration: ``num`` crops drawn with ``seed`` from ``split`` of dataset spec ``data`` (the crops the model
    was trained on, e.g. ``cache:crops/fer64a0``), preprocessed as serving does. The model's ``.json`` gains
    ``int8``: the file, its sha256, the hash of the weights it was quantised from (the ONNX Runtime backend of
    :class:`~lightfer.classifier.ExpressionClassifier` uses it only for those weights), the calibration and
    ``evaluation`` (measured figures to record). ``reduce_range``: 7-bit weights, see
    :func:`~lightfer.export.quantize.quantize_int8`. The model is registered again with its int8 file. Returns the
    ``.onnx`` path.
    """
    import numpy as np

    from lightfer.classifier import _state_hash
    from lightfer.data import build_dataset
    from lightfer.data.transforms import crops_to_input
    from lightfer.export.quantize import quantize_int8
    from lightfer.models.registry import create_model

    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    meta_path = out_dir / f"{name}.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no shipped model {name!r} to quantise")
    model = create_model(name, pretrained=True).eval()
    ds = build_dataset(data, split)
    if len(ds) == 0:
        raise ValueError(f"{data} [{split}]: no calibration images")
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), min(num, len(ds)), replace=False))
    calib = crops_to_input(np.asarray(ds.images)[idx], model.pretrained_cfg)
    path = quantize_int8(model, out_dir / f"{name}.int8.onnx", calib, reduce_range=reduce_range)
    meta = json.loads(meta_path.read_text())
    meta["int8"] = {
        "file": path.name, "sha256": _sha256(path), "state": _state_hash(model),
        "format": "ONNX Runtime static quantisation, QDQ: int8 weights per channel"
                  + (" in 7 bits (reduce_range)" if reduce_range else "") + ", uint8 activations per tensor",
        "reduce_range": reduce_range,
        "calibration": f"{len(idx)} inputs of {data.split(':', 1)[0]} [{split}] drawn with seed {seed}",
        **({"evaluation": evaluation} if evaluation else {}),
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    if out_dir == WEIGHTS_DIR or name in _REGISTRY:  # registered again, now with its int8 file
        _REGISTRY.pop(name, None)
        _register(meta_path)
    return path


def reproduction_check(name: str, data: str, *, split: str = "test", limit: int = 500,
                       work_dir: str | Path | None = None, timeout: float = 1200,
                       precision: str = "auto") -> dict[str, Any]:
    """Score shipped model ``name`` on the first ``limit`` images of ``split`` of dataset spec ``data`` exactly as a
    user would: ``lightfer prepare --model NAME --limit N`` (the product's detector and aligner, crop size and mode
    from the model's config), then ``lightfer eval NAME --backend onnx`` (ONNX Runtime as served, the model's own
    TTA setting and its int8 file where it ships one), each in a fresh process.

    ``precision`` is passed to ``lightfer eval --precision`` (``"int8"`` pins a shipped int8 file whatever the CPU).
    Returns ``{"data": <spec kind>, "split", "limit", "correct", "accuracy", "precision"}``: what ``provenance.check``
    records when a model ships and what the test suite compares against later.
    """
    import subprocess
    import sys
    import tempfile

    def run(*args: Any) -> None:
        proc = subprocess.run([sys.executable, "-m", "lightfer", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"lightfer {args[0]} failed for {name}:\n{proc.stderr[-2000:]}")

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        crops, report = Path(tmp) / "crops", Path(tmp) / "report.json"
        run("prepare", "--data", data, "--out", crops, "--splits", split, "--model", name, "--limit", limit,
            "--threads", 1, "--no-progress")
        run("eval", name, "--data", f"cache:{crops}", "--split", split, "--no-latency", "--threads", 1,
            "--backend", "onnx", "--precision", precision, "--json", report)  # as served: ONNX Runtime, a shipped int8 model where there is one
        r = json.loads(report.read_text())
    return {"data": data.split(":", 1)[0], "split": split, "limit": int(r["num_samples"]),
            "correct": int(round(r["accuracy"] * r["num_samples"])), "accuracy": float(r["accuracy"]),
            "precision": r.get("precision", "fp32")}


register_shipped()
