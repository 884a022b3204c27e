"""Readers for datasets stored as image files: class folders, RAF-DB, AffectNet and CK+.

Layouts supported (``root`` is what the spec names):

* ``folder``: ``root/<class>/*`` or ``root/<split>/<class>/*``; class folders are expression
  names (any spelling in :data:`lightfer.data.labels.SYNONYMS`) or codes of a named label map.
* ``rafdb`` (Li et al., CVPR 2017, basic set): ``root/EmoLabel/list_patition_label.txt`` (lines
  ``train_00001.jpg 5``) and ``root/Image/aligned/train_00001_aligned.jpg`` (100x100). The
  Kaggle copy ``DATASET/{train,test}/{1..7}/`` is ``folder:DATASET?labels=rafdb``.
* ``affectnet`` (Mollahosseini et al., 2017): either the official CSV (``training.csv`` /
  ``validation.csv`` with ``subDirectory_filePath, face_x, face_y, face_width, face_height, ...,
  expression``; images under ``root/Manually_Annotated_Images/``; the face box is cropped;
  expressions 8-10 are dropped), or class folders ``root/{train,val}/<name or 0..7>/``.
  ``classes=7`` drops contempt.
* ``ckplus`` (Lucey et al., 2010): official ``root/cohn-kanade-images/S005/001/*.png`` with
  ``root/Emotion/S005/001/*_emotion.txt``: the last ``peak`` frames of each labelled sequence take
  its label, and with ``neutral=1`` its first frame is ``neutral``; or class folders (Kaggle CK+48).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from lightfer.data.dataset import FERDataset
from lightfer.data.fer2013 import MalformedFileError
from lightfer.data.labels import CANONICAL_CLASSES, LABEL_MAPS, LabelError, canonical_name, map_code

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "Training", "Train"),
    "val": ("val", "valid", "validation", "Validation", "PublicTest", "Val"),
    "test": ("test", "testing", "Test", "PrivateTest"),
}


def read_image_file(path: Path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` through ``lightfer.io.read_image`` when present (EXIF-aware), else OpenCV."""
    try:
        from lightfer.io import read_image
    except ImportError:  # the lead's io module not landed yet
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise MalformedFileError(f"{path}: not a readable image") from None
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return read_image(path)


def resize(img: np.ndarray, size: int, up: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Square resize of a uint8 image (area when shrinking, ``up`` interpolation when enlarging)."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if min(h, w) > size else up
    return cv2.resize(img, (size, size), interpolation=interp)


def load_images(paths: Sequence[Path], size: int | None = None, gray: bool = False,
                boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
    """Read files into one uint8 array ``(N, S, S, 3)`` (or ``(N, S, S)`` with ``gray``).

    ``size`` None keeps the first image's size (non-square or differing images are resized to it).
    ``boxes`` optionally crops ``(x, y, w, h)`` from each image first.
    """
    out: np.ndarray | None = None
    for i, p in enumerate(paths):
        img = read_image_file(Path(p))
        if boxes is not None and boxes[i] is not None:
            x, y, w, h = boxes[i]
            x0, y0 = max(0, x), max(0, y)
            img = img[y0:y + h, x0:x + w]
            if img.size == 0:
                raise MalformedFileError(f"{p}: face box {boxes[i]} is outside the image")
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if out is None:
            size = size or max(img.shape[:2])
            out = np.empty((len(paths), size, size) + img.shape[2:], np.uint8)
        out[i] = resize(img, int(size))
    if out is None:
        side = size or 1
        out = np.zeros((0, side, side) if gray else (0, side, side, 3), np.uint8)
    return out


def _label_of(name: str, labels: str | None, where: str) -> str:
    if labels is not None and name.isdigit():
        return map_code(labels, int(name), where)
    return canonical_name(name, where)


def _split_root(root: Path, split: str | None) -> Path:
    if split is None or split == "all":
        return root
    for cand in SPLIT_DIRS.get(split, (split,)):
        if (root / cand).is_dir():
            return root / cand
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FileNotFoundError(f"{root}: no folder for split {split!r} (tried {SPLIT_DIRS.get(split, (split,))}; "
                            f"found {subdirs}); use split=all for a folder without splits")


def read_folder(root: str | Path, split: str | None = None, *, size: int | None = None, gray: bool = False,
                labels: str | None = None, classes: int | None = None, name: str = "folder") -> FERDataset:
    """``root/[<split>/]<class>/*`` images; class folder names are canonical names or ``labels`` codes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if labels is not None and labels not in LABEL_MAPS:
        raise ValueError(f"unknown label map {labels!r}; known: {sorted(LABEL_MAPS)}")
    base = _split_root(root, split)
    # classes = union over every split folder, so train / val / test share one label index
    split_dirs = [d for d in root.iterdir() if d.is_dir() and any(d.name in v for v in SPLIT_DIRS.values())]
    union = {_label_of(c.name, labels, str(c)) for d in (split_dirs if base != root else [root])
             for c in d.iterdir() if c.is_dir()}
    files: list[Path] = []
    names: list[str] = []
    for d in sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name.lower()):
        cls = _label_of(d.name, labels, str(d))
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTS and f.is_file():
                files.append(f)
                names.append(cls)
    if not files:
        raise FileNotFoundError(f"{base}: no images in class folders ({', '.join(IMAGE_EXTS)})")
    return _finish(files, names, size=size, gray=gray, classes=classes, name=f"{name}[{split or 'all'}]",
                   present=union)


def _finish(files: list[Path], names: list[str], *, size: int | None, gray: bool, classes: int | None,
            name: str, boxes: list | None = None, present: set[str] | None = None) -> FERDataset:
    if classes == 7:  # drop contempt (AffectNet-7 / FER2013 label set)
        keep = [i for i, n in enumerate(names) if n != "contempt"]
        files, names = [files[i] for i in keep], [names[i] for i in keep]
        boxes = None if boxes is None else [boxes[i] for i in keep]
    elif classes not in (None, 8):
        raise ValueError(f"classes must be 7 or 8, got {classes}")
    present = set(names) | (present or set())
    cls = tuple(c for c in CANONICAL_CLASSES if c in present)
    if classes == 7:
        cls = CANONICAL_CLASSES[:7]
    elif classes == 8:
        cls = CANONICAL_CLASSES
    index = {c: i for i, c in enumerate(cls)}
    ds = FERDataset(images=load_images(files, size, gray, boxes), labels=np.array([index[n] for n in names]),
                    classes=cls, ids=[str(f) for f in files], name=name)
    log.info("%s", ds.summary())
    return ds


def read_rafdb(root: str | Path, split: str | None, *, size: int | None = None, gray: bool = False) -> FERDataset:
    """RAF-DB basic: ``list_patition_label.txt`` + aligned images (splits ``train`` / ``test``)."""
    root = Path(root)
    label_file = root if root.is_file() else root / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file}: RAF-DB label list not found")
    base = label_file.parent.parent
    image_dirs = [base / "Image" / "aligned", base / "aligned", base / "Image"]
    if split not in (None, "all", "train", "test"):
        raise ValueError(f"RAF-DB has splits train and test (no {split!r}); hold out part of train for val")
    files, names = [], []
    for line_no, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise MalformedFileError(f"{label_file}:{line_no}: expected '<image> <label 1..7>', got {line!r}")
        fname, code = parts[0], int(parts[1])
        if split in ("train", "test") and not fname.startswith(split):
            continue
        stem = Path(fname).stem
        cands = [d / f"{stem}_aligned.jpg" for d in image_dirs] + [d / fname for d in image_dirs]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{label_file}:{line_no}: image for {fname} not found (looked for {cands[0]})")
        files.append(path)
        names.append(map_code("rafdb", code, f"{label_file}:{line_no}"))
    if not files:
        raise FileNotFoundError(f"{label_file}: no rows for split {split!r}")
    return _finish(files, names, size=size, gray=gray, classes=None, name=f"rafdb[{split or 'all'}]",
                   present=set(LABEL_MAPS["rafdb"].values()))  # the 7 basic classes in every split


def read_affectnet(root: str | Path, split: str | None, *, size: int | None = None, gray: bool = False,
                   classes: int = 8) -> FERDataset:
    """AffectNet from the official CSV (face box cropped) or from class folders; see the module doc."""
    root = Path(root)
    csv_path: Path | None = root if root.is_file() else None
    if csv_path is None:
        want = {"train": "training.csv", "val": "validation.csv", "test": "validation.csv"}.get(split or "", "")
        if want and (root / want).is_file():
            csv_path = root / want
    if csv_path is None:
        return read_folder(root, split, size=size, gray=gray, labels="affectnet", classes=classes, name="affectnet")
    img_root = csv_path.parent / "Manually_Annotated_Images"
    if not img_root.is_dir():
        img_root = csv_path.parent
    files, names, boxes = [], [], []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"subDirectory_filePath", "expression"}
        if not need <= set(reader.fieldnames or ()):
            raise MalformedFileError(f"{csv_path}:1: header lacks {sorted(need - set(reader.fieldnames or ()))}")
        for line_no, row in enumerate(reader, start=2):
            try:
                code = int(row["expression"])
            except (TypeError, ValueError):
                raise MalformedFileError(f"{csv_path}:{line_no}: expression {row['expression']!r} is not an integer") from None
            if code >= 8:  # none / uncertain / no-face
                continue
            cls = map_code("affectnet", code, f"{csv_path}:{line_no}")
            path = img_root / row["subDirectory_filePath"]
            if not path.is_file():
                raise FileNotFoundError(f"{csv_path}:{line_no}: image {path} not found")
            box = None
            if row.get("face_width"):
                try:
                    box = tuple(int(float(row[k])) for k in ("face_x", "face_y", "face_width", "face_height"))
                except ValueError:
                    raise MalformedFileError(f"{csv_path}:{line_no}: face box is not numeric") from None
            files.append(path)
            names.append(cls)
            boxes.append(box)
    return _finish(files, names, size=size, gray=gray, classes=classes, name=f"affectnet[{split or 'all'}]",
                   boxes=boxes)


def read_ckplus(root: str | Path, split: str | None = None, *, size: int | None = None, gray: bool = False,
                peak: int = 3, neutral: bool = False) -> FERDataset:
    """CK+ official layout (labelled sequences) or class folders; see the module doc."""
    root = Path(root)
    emo_root, img_root = root / "Emotion", root / "cohn-kanade-images"
    if not emo_root.is_dir():
        return read_folder(root, split, size=size, gray=gray, labels="ckplus", name="ckplus")
    if not img_root.is_dir():
        raise FileNotFoundError(f"{img_root}: CK+ images folder not found next to {emo_root}")
    files, names = [], []
    for emo_file in sorted(emo_root.rglob("*_emotion.txt")):
        text = emo_file.read_text().strip()
        try:
            code = int(float(text))
        except ValueError:
            raise MalformedFileError(f"{emo_file}:1: emotion code {text!r} is not a number") from None
        cls = map_code("ckplus", code, str(emo_file))
        seq = img_root / emo_file.parent.relative_to(emo_root)
        frames = sorted(f for f in seq.glob("*") if f.suffix.lower() in IMAGE_EXTS)
        if not frames:
            raise FileNotFoundError(f"{emo_file}: no frames in {seq}")
        for f in frames[-peak:]:
            files.append(f)
            names.append(cls)
        if neutral and len(frames) > peak:
            files.append(frames[0])
            names.append("neutral")
    if not files:
        raise FileNotFoundError(f"{emo_root}: no *_emotion.txt files")
    return _finish(files, names, size=size, gray=gray, classes=8, name="ckplus[all]")
