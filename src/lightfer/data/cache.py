"""Face-aligned crop cache (``lightfer prepare``): seed 000's RetinaFace pre-processing of training data.

Each image is (if small, e.g. 48x48) upscaled with bicubic interpolation and padded, passed to
the product's :class:`lightfer.detection.FaceDetector`, and the best face is cut with
:func:`lightfer.alignment.crop_face` in the model's ``crop_mode`` (5-point alignment or square box
crop) -- the same crop serving uses. When no face is found the
dataset's own crop, resized, is kept, and ``face_found`` says so. Output, in one folder:

* ``<split>.npz`` (compressed): ``images`` uint8 ``(N, S, S)`` gray or ``(N, S, S, 3)``, ``labels``
  int64 ``(N,)``, ``face_found`` bool ``(N,)``, ``scores`` float32 ``(N,)``, ``boxes`` float32
  ``(N, 4)`` and ``landmarks`` float32 ``(N, 5, 2)`` in source-image pixels (NaN when not found),
  ``ids`` str ``(N,)``, and ``soft_labels`` float32 ``(N, C)`` for FER+;
* ``index.json``: classes, crop size and margin, detector settings, per-split counts and
  detection rates, the source spec. A split may instead be stored as shards listed under ``files``
  (:func:`shard_cache`); readers concatenate them in order.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from lightfer.data.dataset import FERDataset
from lightfer.data.images import resize

log = logging.getLogger(__name__)

CACHE_FORMAT = "lightfer-crop-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CropSettings:
    """How crops are cut."""

    size: int = 64  # side of the square crop, px
    margin: float = 0.0  # crop margin (lightfer.alignment)
    mode: str = "align"  # "align" (5-point warp) or "box" (square crop of the detector box), as the model's crop_mode
    upscale: float = 4.0  # images whose shorter side is below small_side are enlarged by this (bicubic)
    small_side: int = 160  # px; larger images are detected at their own size
    pad: float = 0.25  # padding added on each side, as a fraction of the (upscaled) side
    border: str = "replicate"  # how the padding is filled: replicate | constant (black)


def _pad_upscale(rgb: np.ndarray, s: CropSettings) -> tuple[np.ndarray, float, int, int]:
    """Upscale (if small) and pad ``rgb (H, W, 3)``; returns the image, its scale and the x / y offsets."""
    h, w = rgb.shape[:2]
    scale = float(s.upscale) if min(h, w) < s.small_side else 1.0
    img = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) if scale != 1 else rgb
    py, px = round(img.shape[0] * s.pad), round(img.shape[1] * s.pad)
    mode = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}[s.border]
    img = cv2.copyMakeBorder(img, py, py, px, px, mode, value=(0, 0, 0))
    return img, scale, px, py


def crop_faces(images: np.ndarray, detect: Callable[[np.ndarray], list], settings: CropSettings,
               progress: bool = False) -> dict[str, np.ndarray]:
    """Detect + align one face per image of ``images`` uint8 ``(N, H, W[, 3])``.

    ``detect`` maps an RGB uint8 image to a list of ``Face`` (e.g. ``FaceDetector(...).detect``).
    The face kept is the best-scoring one whose centre lies inside the original (unpadded) image.

    Returns:
        dict with ``images`` (crops, gray when the input is gray), ``face_found``, ``scores``,
        ``boxes`` and ``landmarks`` (source pixels) as described in the module doc.
    """
    n, gray = len(images), images.ndim == 3
    size = settings.size
    crops = np.empty((n, size, size) if gray else (n, size, size, 3), np.uint8)
    found = np.zeros(n, bool)
    scores = np.zeros(n, np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    marks = np.full((n, 5, 2), np.nan, np.float32)
    it: Sequence[int] | Any = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="prepare", unit="img", leave=False)
    for i in it:
        src = images[i]
        rgb = np.repeat(src[..., None], 3, axis=-1) if gray else src
        big, scale, px, py = _pad_upscale(rgb, settings)
        faces = detect(big)
        h, w = rgb.shape[:2]
        best = None
        for f in faces:  # sorted by decreasing score
            cx = ((f.box[0] + f.box[2]) / 2 - px) / scale
            cy = ((f.box[1] + f.box[3]) / 2 - py) / scale
            if 0 <= cx < w and 0 <= cy < h:
                best = f
                break
        if best is None:
            crop = resize(src, size)
        else:
            crop = _cut(big, scale, np.asarray(best.box, np.float64), np.asarray(best.landmarks, np.float64),
                        settings, gray)
            found[i] = True
            scores[i] = best.score
            off = np.array([px, py], np.float32)
            boxes[i] = ((np.asarray(best.box).reshape(2, 2) - off) / scale).ravel()
            marks[i] = (np.asarray(best.landmarks).reshape(5, 2) - off) / scale
        crops[i] = crop
    return {"images": crops, "face_found": found, "scores": scores, "boxes": boxes, "landmarks": marks}


def _cut(big: np.ndarray, scale: float, box: np.ndarray, landmarks: np.ndarray, settings: CropSettings,
         gray: bool) -> np.ndarray:
    """The crop of a face found in ``big`` (the padded, upscaled image; ``box`` / ``landmarks`` in its pixels)."""
    from lightfer.alignment import crop_face

    # an image enlarged for detection has no detail to alias: cut it with the plain warp, as every
    # shipped model's crops were cut (anti-aliasing the smooth enlargement would only change bits)
    crop = crop_face(big, box, landmarks, settings.size, settings.margin, settings.mode, antialias=scale == 1.0)
    return crop[..., 0] if gray else crop


def recut_faces(images: np.ndarray, found: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
                settings: CropSettings) -> np.ndarray:
    """Cut the crops again from the source images ``(N, H, W[, 3])`` uint8 and a cache's stored detections
    (``face_found`` ``(N,)``, ``boxes`` ``(N, 4)`` and ``landmarks`` ``(N, 5, 2)`` in source pixels), without the
    detector: the crops :func:`crop_faces` made, ``(N, S, S[, 3])`` uint8 (bit for bit on the 64 px FER2013
    cache: the stored float32 detections carry the warp exactly)."""
    gray, size = images.ndim == 3, settings.size
    out = np.empty((len(images), size, size) if gray else (len(images), size, size, 3), np.uint8)
    for i, src in enumerate(images):
        if not found[i]:
            out[i] = resize(src, size)
            continue
        rgb = np.repeat(src[..., None], 3, axis=-1) if gray else src
        big, scale, px, py = _pad_upscale(rgb, settings)
        off = np.array([px, py], np.float64)
        box = (boxes[i].astype(np.float64).reshape(2, 2) * scale + off).ravel()
        out[i] = _cut(big, scale, box, landmarks[i].astype(np.float64) * scale + off, settings, gray)
    return out


DETECTION_KEYS = ("upscale", "small_side", "pad", "border", "detector")  # index entries that decide the detections


def load_detections(caches: Sequence[str | Path], settings: CropSettings,
                    detector: dict[str, Any]) -> dict[str, Any]:
    """The stored detections of other crop caches, for :func:`write_split`'s ``reuse``: a cache of the same source
    images (e.g. FER2013 and FER+, which share FER2013's pixels and its ``file:line`` ids) need not run the detector
    again, and may cut crops of another size, margin or mode from them.

    Every cache must have been detected as this run detects (``upscale``, ``small_side``, ``pad``, ``border`` and
    the detector settings equal), or a ``ValueError`` names the difference. Returns ``{"ids": {id: (cache, row)},
    "arrays": [per-cache dict of face_found, scores, boxes, landmarks, images], "same_crop": [bool]}``
    (``same_crop``: the cache's crops are cut as this run's, so reused crops can be checked bit for bit)."""
    head = {"upscale": settings.upscale, "small_side": settings.small_side, "pad": settings.pad,
            "border": settings.border, "detector": detector}
    out: dict[str, Any] = {"ids": {}, "arrays": [], "same_crop": []}
    for c, cache in enumerate(caches):
        index = read_index(cache)
        for key in DETECTION_KEYS:
            if index.get(key) != head[key]:
                raise ValueError(f"{index['_dir']}: its faces were detected with {key}={index.get(key)!r}, this run "
                                 f"uses {head[key]!r}: its detections cannot be reused")
        keep: dict[str, list[np.ndarray]] = {k: [] for k in ("face_found", "scores", "boxes", "landmarks", "images")}
        n = 0
        for split in index.get("splits", {}):
            arrays = read_cache_arrays(cache, split)
            for k in keep:
                keep[k].append(arrays[k])
            for i, sid in enumerate(arrays["ids"]):
                out["ids"].setdefault(str(sid), (c, n + i))
            n += len(arrays["ids"])
        out["arrays"].append({k: np.concatenate(v) for k, v in keep.items()})
        out["same_crop"].append(_settings(index) == settings)
    return out


def _crop_reusing(images: np.ndarray, ids: Sequence[str], detect: Callable[[np.ndarray], list],
                  settings: CropSettings, reuse: dict[str, Any], progress: bool) -> dict[str, np.ndarray]:
    """:func:`crop_faces` of ``images`` ``(N, H, W[, 3])``, taking the detections of the ids found in ``reuse``
    (:func:`load_detections`) and running ``detect`` on the rest only."""
    where = np.array([reuse["ids"].get(str(i), (-1, -1)) for i in ids], np.int64).reshape(-1, 2)
    cache_of, row_of = where[:, 0], where[:, 1]  # -1: not in any reused cache
    have = cache_of >= 0
    fresh = crop_faces(images[~have], detect, settings, progress=progress)
    out = {k: np.empty((len(images),) + v.shape[1:], v.dtype) for k, v in fresh.items()}
    for k, v in fresh.items():
        out[k][~have] = v
    checked = differ = 0
    for c, arrays in enumerate(reuse["arrays"]):
        mine = np.flatnonzero(cache_of == c)
        if not len(mine):
            continue
        src = row_of[mine]
        for k in ("face_found", "scores", "boxes", "landmarks"):
            out[k][mine] = arrays[k][src]
        out["images"][mine] = recut_faces(images[mine], arrays["face_found"][src], arrays["boxes"][src],
                                          arrays["landmarks"][src], settings)
        if reuse["same_crop"][c]:
            checked += len(mine)
            differ += int((out["images"][mine] != arrays["images"][src]).reshape(len(mine), -1).any(1).sum())
    log.info("reused the detections of %d of %d images (%d detected now)", int(have.sum()), len(images),
             int((~have).sum()))
    if checked and differ > 0.01 * checked:
        raise ValueError(f"{differ} of {checked} crops cut from reused detections differ from the reused cache's own "
                         "crops: its images are not this dataset's (same ids, other pixels?)")
    if differ:
        log.warning("%d of %d crops cut from reused detections differ from the reused cache's (OpenCV build?)",
                    differ, checked)
    return out


def write_split(out_dir: str | Path, split: str, dataset: FERDataset, detect: Callable[[np.ndarray], list],
                settings: CropSettings, progress: bool = False, reuse: dict[str, Any] | None = None) -> dict[str, Any]:
    """Crop one split of ``dataset`` into ``out_dir/<split>.npz``; returns its index entry. ``reuse``
    (:func:`load_detections`) supplies stored detections by id: only images without one meet the detector."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if reuse is not None and dataset.ids:
        arrays = _crop_reusing(dataset.images, dataset.ids, detect, settings, reuse, progress)
    else:
        arrays = crop_faces(dataset.images, detect, settings, progress=progress)
    arrays["labels"] = dataset.labels
    arrays["ids"] = np.asarray(dataset.ids, dtype=str)
    if dataset.soft_labels is not None:
        arrays["soft_labels"] = dataset.soft_labels
    tmp = out_dir / f".{split}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out_dir / f"{split}.npz")  # atomic: a half-written cache never looks complete
    n, k = len(dataset), int(arrays["face_found"].sum())
    entry = {"file": f"{split}.npz", "count": n, "faces_found": k, "detection_rate": round(k / n, 4) if n else 0.0,
             "class_counts": dataset.class_counts().tolist()}
    log.info("%s: %d/%d faces found (%.1f%%)", split, k, n, 100.0 * entry["detection_rate"])
    return entry


def update_index(out_dir: str | Path, split: str, entry: dict[str, Any], *, dataset: FERDataset,
                 settings: CropSettings, source: str, model: str | None, detector: dict[str, Any]) -> Path:
    """Write or update ``out_dir/index.json`` with one split's entry (checks settings agree)."""
    path = Path(out_dir) / "index.json"
    index: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    head = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "source": source, "classes": list(dataset.classes),
        "channels": dataset.channels, "size": settings.size, "margin": settings.margin, "crop_mode": settings.mode,
        "model": model,
        "upscale": settings.upscale, "small_side": settings.small_side, "pad": settings.pad,
        "border": settings.border, "detector": detector,
    }
    for key in ("classes", "size", "margin", "crop_mode", "channels"):
        if key in index and index[key] != head[key]:
            raise ValueError(f"{path}: existing cache has {key}={index[key]!r}, this run {head[key]!r}; "
                             "use another --out folder")
    splits = index.get("splits", {})
    splits[split] = {**entry, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    index.update(head)
    index["splits"] = splits
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=2))
    tmp.replace(path)
    return path


def read_index(path: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a cache folder (or the file itself), validated."""
    path = Path(path)
    index_path = path / "index.json" if path.is_dir() else path
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: no crop-cache index (run `lightfer prepare` first)")
    index = json.loads(index_path.read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"{index_path}: not a lightfer crop cache (format {index.get('format')!r})")
    if index.get("version", 0) > CACHE_VERSION:
        raise ValueError(f"{index_path}: cache version {index['version']} is newer than this lightfer")
    index["_dir"] = str(index_path.parent)
    return index


def read_cache_arrays(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """Every stored array of one split (``images``, ``labels``, ``face_found``, ``boxes``, ``landmarks``, …) of the
    cache at ``path``, sharded or not."""
    index = read_index(path)
    return _load_split_arrays(Path(index["_dir"]), split, _split_entry(index, split))


def _split_entry(index: dict[str, Any], split: str) -> dict[str, Any]:
    """The index entry of ``split``, or an error naming the splits the cache has."""
    splits = index.get("splits", {})
    if split not in splits:
        raise FileNotFoundError(f"{index['_dir']}: split {split!r} not in the cache (has {sorted(splits)})")
    return splits[split]


def _split_files(entry: dict[str, Any]) -> list[str]:
    """A split's file names: its shards (``files``) or its one ``file``."""
    if "pack" in entry and "file" not in entry and "files" not in entry:
        raise ValueError(f"split stored packed ({entry['pack']}): unpack the cache first "
                         "(python scripts/pack_cache.py unpack SRC DST)")
    return entry.get("files") or [entry["file"]]


def _load_split_arrays(root: Path, split: str, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of one split: its ``file``, or its ``files`` (shards, see :func:`shard_cache`) concatenated."""
    parts: list[dict[str, np.ndarray]] = []
    for name in _split_files(entry):
        file = root / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}: file of split {split!r} missing from the crop cache")
        with np.load(file, allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    arrays = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if len(arrays["labels"]) != entry.get("count", len(arrays["labels"])):
        raise ValueError(f"{root}: split {split!r} holds {len(arrays['labels'])} samples, its index says {entry['count']}")
    return arrays


def shard_cache(src: str | Path, dst: str | Path, max_mb: float) -> dict[str, list[str]]:
    """Copy the crop cache ``src`` to ``dst`` with every split cut into compressed shards of at most ~``max_mb`` MB
    (``<split>.partNN.npz``, listed under ``files`` in the index; the samples keep their order).

    For moving a cache through a channel with a size limit per transfer (e.g. a lent GPU machine's carry limit):
    each shard, with ``index.json``, can travel on its own. Returns ``{split: [shard file names]}``."""
    index = read_index(src)
    root, dst = Path(index.pop("_dir")), Path(dst)
    if dst.resolve() == root.resolve():
        raise ValueError(f"{dst}: shard into another folder than the source cache")
    dst.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for split, entry in index.get("splits", {}).items():
        arrays = _load_split_arrays(root, split, entry)
        n = len(arrays["labels"])
        size_mb = sum((root / f).stat().st_size for f in _split_files(entry)) / 1e6
        k = max(1, int(np.ceil(size_mb / max_mb * 1.05)))  # compressed sizes vary a little between shards
        names = []
        for i, sl in enumerate(np.array_split(np.arange(n), k)):
            name = f"{split}.part{i:02d}.npz"
            np.savez_compressed(dst / name, **{key: a[sl] for key, a in arrays.items()})
            names.append(name)
        entry = {**entry, "files": names}
        entry.pop("file", None)
        index["splits"][split] = entry
        out[split] = names
        log.info("%s: %d samples in %d shards", split, n, k)
    (dst / "index.json").write_text(json.dumps(index, indent=2))
    return out


def _settings(index: dict[str, Any]) -> CropSettings:
    """The crop settings an index records."""
    return CropSettings(size=index["size"], margin=index["margin"], mode=index.get("crop_mode", "align"),
                        upscale=index["upscale"], small_side=index["small_side"], pad=index["pad"],
                        border=index.get("border", "replicate"))


def _sha256(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _crc32(images: np.ndarray) -> np.ndarray:
    """CRC-32 of each image ``(N, ...)`` uint8: ``(N,)`` uint32."""
    import zlib

    return np.array([zlib.crc32(np.ascontiguousarray(im).tobytes()) for im in images], np.uint32)


def pack_cache(src: str | Path, dst: str | Path, splits: Sequence[str] | None = None,
               source: str | None = None, limit: dict[str, int] | None = None) -> dict[str, float]:
    """Copy the crop cache ``src`` to ``dst`` as its *source* images (lossless WebP) and stored detections instead
    of its crops: :func:`unpack_cache` cuts the crops again, bit for bit (checked against a SHA-256 of the
    crops). For small-source datasets this is the smallest lossless form: FER2013's 48 px faces are 0.56 of
    their raw size, while the 64 px crops they become are 1.8x as many pixels and compress no better.

    ``source`` is the dataset spec to read the source images from (default: the one the index records); every
    cached id must be in it. ``limit`` keeps the first samples of a split (``{"val": 1000}``; the index counts
    them). Returns ``{split: MB written}``. For moving a cache through a size-limited channel,
    e.g. a lent GPU machine's 64 MiB per call."""
    from lightfer.data import build_dataset

    index = read_index(src)
    root, dst = Path(index["_dir"]), Path(dst)
    if dst.resolve() == root.resolve():
        raise ValueError(f"{dst}: pack into another folder than the source cache")
    dst.mkdir(parents=True, exist_ok=True)
    spec = source or index["source"]
    out: dict[str, float] = {}
    for split in splits or list(index.get("splits", {})):
        entry = dict(_split_entry(index, split))
        arrays = _load_split_arrays(root, split, entry)
        if limit and split in limit and limit[split] < len(arrays["labels"]):
            arrays = {k: a[:limit[split]] for k, a in arrays.items()}
            entry.update(count=len(arrays["labels"]), faces_found=int(arrays["face_found"].sum()),
                         class_counts=np.bincount(arrays["labels"], minlength=len(index["classes"])).tolist(),
                         limited_to_first=limit[split])
            entry["detection_rate"] = round(entry["faces_found"] / entry["count"], 4)
        ds = build_dataset(spec, split)
        where = {k: i for i, k in enumerate(ds.ids)}
        missing = [k for k in arrays["ids"] if str(k) not in where]
        if missing:
            raise ValueError(f"{spec}: {len(missing)} ids of split {split!r} of {root} are not in it "
                             f"(first {missing[0]!r}); pass the source the cache was made from")
        images = ds.images[[where[str(k)] for k in arrays["ids"]]]
        blobs = []
        for i, im in enumerate(images):
            ok, buf = cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])  # quality > 100: lossless
            if not ok:
                raise ValueError(f"{spec}: image {arrays['ids'][i]} could not be encoded")
            blobs.append(buf.ravel())
        name = f"{split}.pack.npz"
        rest = {k: a for k, a in arrays.items() if k != "images"}
        np.savez_compressed(dst / name, **rest, crop_crc32=_crc32(arrays["images"]), source_bytes=np.concatenate(blobs),
                 source_offsets=np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
                 source_shape=np.asarray(images.shape[1:], np.int64))
        for key in ("file", "files"):
            entry.pop(key, None)
        entry.update(pack=name, crops_sha256=_sha256(arrays["images"]), source_sha256=_sha256(images))
        index["splits"][split] = entry
        out[split] = (dst / name).stat().st_size / 1e6
        log.info("%s: %d samples packed, %.1f MB", split, len(images), out[split])
    index.pop("_dir")
    index["splits"] = {k: v for k, v in index["splits"].items() if k in out}
    index["packed_from"] = spec
    (dst / "index.json").write_text(json.dumps(index, indent=2))
    return out


def unpack_cache(src: str | Path, dst: str | Path, strict: bool = True) -> dict[str, int]:
    """Make a plain crop cache in ``dst`` from the packed one in ``src`` (:func:`pack_cache`): the source images
    decoded and the crops cut again from the stored detections, each split checked bit for bit against the
    crops' SHA-256 (a mismatch raises ``ValueError`` naming the split and how many crops differ). With
    ``strict=False`` a mismatch (e.g. another OpenCV build rounding a warp differently) is a warning and the
    index records the count as ``recut_differs``. Returns ``{split: samples}``."""
    index = read_index(src)
    root, dst = Path(index.pop("_dir")), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    settings = _settings(index)
    out: dict[str, int] = {}
    for split, entry in index.get("splits", {}).items():
        if "pack" not in entry:
            raise ValueError(f"{root}: split {split!r} is not packed")
        with np.load(root / entry["pack"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        data, offsets, shape = arrays.pop("source_bytes"), arrays.pop("source_offsets"), arrays.pop("source_shape")
        crc = arrays.pop("crop_crc32")
        flag = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
        images = np.stack([cv2.imdecode(data[a:b], flag) for a, b in zip(offsets[:-1], offsets[1:])])
        if _sha256(images) != entry["source_sha256"]:
            raise ValueError(f"{root / entry['pack']}: the decoded source images of split {split!r} differ from "
                             "the packed ones")
        crops = recut_faces(images, arrays["face_found"], arrays["boxes"], arrays["landmarks"], settings)
        differs = 0
        if _sha256(crops) != entry["crops_sha256"]:
            differs = int((_crc32(crops) != crc).sum())
            msg = (f"{root / entry['pack']}: {differs} of the {len(crops)} crops cut again for split {split!r} differ "
                   "from the cached ones (another OpenCV build?)")
            if strict:
                raise ValueError(msg)
            log.warning("%s; kept", msg)
        np.savez_compressed(dst / f"{split}.npz", images=crops, **arrays)
        entry = {k: v for k, v in entry.items() if k not in ("pack", "crops_sha256", "source_sha256")}
        if differs:
            entry["recut_differs"] = differs
        index["splits"][split] = {**entry, "file": f"{split}.npz"}
        out[split] = len(crops)
        log.info("%s: %d crops cut again and checked", split, len(crops))
    index.pop("packed_from", None)
    (dst / "index.json").write_text(json.dumps(index, indent=2))
    return out


def read_cache(path: str | Path, split: str | None, found_only: bool = False) -> FERDataset:
    """One split of a crop cache as a :class:`FERDataset` (``meta['face_found']`` per sample)."""
    index = read_index(path)
    key = split or "all"
    arrays = _load_split_arrays(Path(index["_dir"]), key, _split_entry(index, key))
    keep = arrays["face_found"] if found_only else np.ones(len(arrays["labels"]), bool)
    ds = FERDataset(images=arrays["images"][keep], labels=arrays["labels"][keep], classes=tuple(index["classes"]),
                    soft_labels=arrays["soft_labels"][keep] if "soft_labels" in arrays else None,
                    ids=[str(s) for s in arrays["ids"][keep]], name=f"cache[{key}]",
                    meta={"face_found": arrays["face_found"][keep], "size": index["size"], "margin": index["margin"],
                          "crop_mode": index.get("crop_mode", "align")})
    log.info("%s", ds.summary())
    return ds
