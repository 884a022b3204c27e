"""Dataset specs: one string (or dict) names a dataset, e.g. ``fer2013:/data/fer2013.csv.gz``.

Syntax: ``KIND:PATH[,PATH...][?key=value&key=value]``; ``SPEC+SPEC`` merges datasets into a
hybrid one (seed 003). Kinds and their paths:

=============  =====================================================  =========================
kind           path(s)                                                options
=============  =====================================================  =========================
fer2013        CSV(s), plain or ``.gz``, concatenated                 (splits train/val/test)
ferplus        FER2013 CSV, then ``fer2013new.csv``                   ``vote=majority|strict``
folder         ``root/[<split>/]<class>/*``                           ``labels=``, ``classes=7``
rafdb          RAF-DB ``basic`` folder or its label list              (splits train/test)
affectnet      official CSV / its folder, or class folders            ``classes=7|8``
ckplus         CK+ root (official ``Emotion/`` layout or folders)     ``peak=3``, ``neutral=1``
cache          a ``lightfer prepare`` output folder                   ``found_only=1``
=============  =====================================================  =========================

Options for every kind: ``size=S`` (square resize), ``gray=1``, ``split=NAME`` (override the
split asked for, e.g. ``split=all`` for a folder without splits). ``+`` joins specs only where a
kind follows it, so a path like ``CK+48`` is safe. A dict spec is
``{"kind": ..., "path": str | list, **options}`` or ``{"kind": "hybrid", "parts": [spec, ...]}``.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

from lightfer.data.dataset import FERDataset

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("fer2013", "ferplus", "folder", "rafdb", "affectnet", "ckplus", "cache")
_INT_OPTS = {"size", "classes", "peak"}
_BOOL_OPTS = {"gray", "neutral", "found_only"}
_STR_OPTS = {"split", "labels", "vote"}
# "+" joins specs only when a kind follows, so paths such as "CK+48" stay whole
_HYBRID_SPLIT = re.compile(r"\+(?=(?:" + "|".join(KINDS) + r"):)")


def parse_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """Normalise a spec to a dict ``{"kind", "paths", **options}`` (hybrid: ``{"kind", "parts"}``)."""
    if isinstance(spec, dict):
        d = dict(spec)
        kind = d.pop("kind", None)
        if kind == "hybrid":
            return {"kind": "hybrid", "parts": [parse_spec(p) for p in d.pop("parts")], **d}
        paths = d.pop("paths", None) or d.pop("path", None)
        if isinstance(paths, str):
            paths = [p for p in paths.split(",") if p]
        return _check({"kind": kind, "paths": list(paths or []), **d}, str(spec))
    text = str(spec).strip()
    parts = _HYBRID_SPLIT.split(text)
    if len(parts) > 1:
        return {"kind": "hybrid", "parts": [parse_spec(p) for p in parts]}
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"dataset spec {text!r} needs KIND:PATH with KIND one of {', '.join(KINDS)}")
    rest, _, query = rest.partition("?")
    opts: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"dataset spec {text!r}: option {item!r} is not key=value")
        opts[key] = value
    return _check({"kind": kind, "paths": [p for p in rest.split(",") if p], **opts}, text)


def _check(d: dict[str, Any], text: str) -> dict[str, Any]:
    if d["kind"] not in KINDS:
        raise ValueError(f"dataset spec {text!r}: unknown kind {d['kind']!r}; use one of {', '.join(KINDS)}")
    if not d["paths"]:
        raise ValueError(f"dataset spec {text!r}: no path given")
    for key in list(d):
        if key in ("kind", "paths"):
            continue
        if key in _INT_OPTS:
            try:
                d[key] = int(d[key])
            except ValueError:
                raise ValueError(f"dataset spec {text!r}: {key}={d[key]!r} is not an integer") from None
        elif key in _BOOL_OPTS:
            d[key] = str(d[key]).lower() in ("1", "true", "yes", "on")
        elif key not in _STR_OPTS:
            raise ValueError(f"dataset spec {text!r}: unknown option {key!r}")
    need = {"ferplus": 2}.get(d["kind"], 1)
    if d["kind"] not in ("fer2013",) and len(d["paths"]) != need:
        raise ValueError(f"dataset spec {text!r}: {d['kind']} takes {need} path(s), got {len(d['paths'])}")
    return d


def _read(d: dict[str, Any], split: str | None) -> FERDataset:
    from lightfer.data import cache, fer2013, images

    d = dict(d)
    kind, paths = d.pop("kind"), d.pop("paths")
    split = d.pop("split", split)
    size, gray = d.pop("size", None), d.pop("gray", False)
    if kind == "fer2013":
        ds = fer2013.read_fer2013(paths, split)
    elif kind == "ferplus":
        ds = fer2013.read_ferplus(paths[0], paths[1], split, vote=d.pop("vote", "majority"))
    elif kind == "cache":
        ds = cache.read_cache(paths[0], split, found_only=d.pop("found_only", False))
    else:
        reader = {"folder": images.read_folder, "rafdb": images.read_rafdb, "affectnet": images.read_affectnet,
                  "ckplus": images.read_ckplus}[kind]
        import inspect

        allowed = set(inspect.signature(reader).parameters) - {"root", "split", "size", "gray"}
        extra = sorted(set(d) - allowed)
        if extra:
            raise ValueError(f"{kind}: options {extra} do not apply to this kind (it takes {sorted(allowed)})")
        ds = reader(paths[0], split, size=size, gray=gray, **d)
        d.clear()
        size, gray = None, False
    if d:
        raise ValueError(f"{kind}: options {sorted(d)} do not apply to this kind")
    if size or gray:
        from lightfer.data.hybrid import merge_datasets

        ds = merge_datasets([ds], classes=ds.classes, size=size or ds.images.shape[1], gray=gray or ds.channels == 1)
    return ds


def build_dataset(spec: str | dict[str, Any], split: str | None = None, transform: Callable | None = None, *,
                  classes: Sequence[str] | None = None, return_soft: bool = False, drop_missing: bool = False,
                  balance: str | None = None, seed: int = 0) -> FERDataset:
    """Read the dataset named by ``spec`` (see the module doc) for ``split`` (train / val / test / all).

    A ``split`` option inside the spec (``?split=all`` or a dict's ``"split"``) wins over the argument.

    Args:
        transform: per-sample ``uint8 (H, W[, C]) -> float tensor (C, H, W)`` (default: scale to [0, 1]).
        classes: re-index labels into this class order (e.g. the model's ``pretrained_cfg.classes``).
        return_soft: ``__getitem__`` yields ``(image, label, soft (C,))`` (FER+ vote distributions).
        drop_missing: with ``classes``, drop samples of other classes instead of raising.
        balance: ``"augment"`` adds augmented minority-class copies (seed 003); for sampling use
            :func:`lightfer.data.hybrid.balanced_sampler` on the result.

    Returns:
        :class:`FERDataset` with bulk ``images`` (uint8) / ``labels`` and canonical ``classes``.
    """
    d = parse_spec(spec)
    if d["kind"] == "hybrid":
        from lightfer.data.hybrid import merge_datasets

        parts = [_read(p, split) for p in d["parts"]]
        ds = merge_datasets(parts, classes=classes or d.get("classes"), size=d.get("size"),
                            drop_missing=drop_missing)
    else:
        ds = _read(d, split)
    if classes is not None:
        ds = ds.remap(classes, drop_missing=drop_missing)
    if balance == "augment":
        from lightfer.data.hybrid import balance_by_augmentation

        ds = balance_by_augmentation(ds, seed=seed)
    elif balance is not None:
        raise ValueError(f"balance must be 'augment' or None (use balanced_sampler for sampling), got {balance!r}")
    ds.transform = transform
    if return_soft and ds.soft_labels is None:
        raise ValueError(f"{ds.name}: soft labels exist only for FER+ (kind ferplus)")
    ds.return_soft = return_soft
    ds.meta["spec"] = spec if isinstance(spec, str) else dict(spec)
    return ds
