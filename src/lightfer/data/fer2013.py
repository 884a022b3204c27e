"""FER2013 (Goodfellow et al., ICONIP 2013) and FER+ (Barsoum et al., ICMI 2016) readers.

FER2013 is one CSV (plain or gzip) with columns ``emotion,pixels,Usage`` (48x48 gray, 2304
space-separated ints) and, in the project's rebuilt copy, ``orig_row`` (the row index in the
original file, which is also the data-row index of FER+'s ``fer2013new.csv``). FER+ joins those
pixels with ten annotator votes per image (8 emotions + unknown + not-a-face).
"""
from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from lightfer.data.dataset import FERDataset
from lightfer.data.labels import FER2013_CLASSES, FERPLUS_CLASSES, LabelError

log = logging.getLogger(__name__)

USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
SPLIT_ALIASES: dict[str, str] = {
    "train": "Training", "training": "Training",
    "val": "PublicTest", "valid": "PublicTest", "validation": "PublicTest", "publictest": "PublicTest",
    "test": "PrivateTest", "privatetest": "PrivateTest",
}
FERPLUS_COLUMNS: tuple[str, ...] = FERPLUS_CLASSES + ("unknown", "NF")
SIDE = 48


class MalformedFileError(ValueError):
    """A data file that does not follow its format (the message names the file and line)."""


def fer_usages(split: str | None) -> tuple[str, ...]:
    """FER2013 ``Usage`` values for a split name (``train``/``val``/``test``, the Usage itself, or ``all``)."""
    if split is None or split.lower() == "all":
        return USAGES
    if split in USAGES:
        return (split,)
    key = split.lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown FER2013 split {split!r}; use train/val/test, {'/'.join(USAGES)} or all")
    return (SPLIT_ALIASES[key],)


def _read_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    """First CSV row, stripped; an empty file is a :class:`MalformedFileError` naming it."""
    try:
        return [h.strip() for h in next(reader)]
    except StopIteration:
        raise MalformedFileError(f"{path}: empty file") from None


def _open_text(path: Path) -> IO[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _parse_pixels(pixels: list[str], lines: list[int], path: Path) -> np.ndarray:
    """Space-separated pixel strings -> uint8 ``(N, 48, 48)``; errors name the bad line."""
    n = len(pixels)
    if n == 0:
        return np.zeros((0, SIDE, SIDE), np.uint8)
    flat: np.ndarray | None = None
    try:
        flat = np.fromstring(" ".join(pixels), dtype=np.int32, sep=" ")  # fast path, ~1 s per 30k rows
    except ValueError:
        flat = None
    if flat is None or flat.size != n * SIDE * SIDE or flat.min() < 0 or flat.max() > 255:
        for p, line in zip(pixels, lines):  # slow path only to name the culprit
            try:
                row = np.array(p.split(), dtype=np.int64)
            except ValueError:
                raise MalformedFileError(f"{path}:{line}: pixels are not all integers") from None
            if row.size != SIDE * SIDE:
                raise MalformedFileError(f"{path}:{line}: {row.size} pixels, expected {SIDE * SIDE} (48x48)")
            if row.min() < 0 or row.max() > 255:
                raise MalformedFileError(f"{path}:{line}: pixel values outside 0..255")
        raise MalformedFileError(f"{path}: could not parse the pixels column")  # pragma: no cover
    return flat.astype(np.uint8).reshape(n, SIDE, SIDE)


def read_fer2013_rows(path: str | Path, usages: Iterable[str] = USAGES) -> dict[str, np.ndarray]:
    """Parse a FER2013 CSV, keeping rows whose ``Usage`` is in ``usages``.

    Returns:
        dict with ``images`` uint8 ``(N, 48, 48)``, ``labels`` int64 ``(N,)`` (FER2013 codes 0..6),
        ``usage`` (N,) str, ``orig_row`` int64 ``(N,)`` (the column if present, else the data-row
        index, which is the original row for an untouched ``fer2013.csv``), ``line`` int64 ``(N,)``.
    """
    path = Path(path)
    wanted = set(usages)
    labels, pixels, usage, orig, lines = [], [], [], [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = _read_header(reader, path)
        for col in ("emotion", "pixels", "Usage"):
            if col not in header:
                raise MalformedFileError(f"{path}:1: header {header} lacks column {col!r}")
        ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("Usage")
        io = header.index("orig_row") if "orig_row" in header else None
        for k, row in enumerate(reader):
            line = k + 2
            if not row:
                continue
            if len(row) != len(header):
                raise MalformedFileError(f"{path}:{line}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
            u = row[iu].strip()
            if u not in USAGES:
                raise MalformedFileError(f"{path}:{line}: Usage {u!r} is not one of {USAGES}")
            if u not in wanted:
                continue
            try:
                code = int(row[ie])
            except ValueError:
                raise MalformedFileError(f"{path}:{line}: emotion {row[ie]!r} is not an integer") from None
            if not 0 <= code < len(FER2013_CLASSES):
                raise LabelError(f"{path}:{line}: emotion {code} not in the FER2013 map 0..6")
            try:
                orig.append(int(row[io]) if io is not None else k)
            except ValueError:
                raise MalformedFileError(f"{path}:{line}: orig_row {row[io]!r} is not an integer") from None
            labels.append(code)
            pixels.append(row[ip])
            usage.append(u)
            lines.append(line)
    images = _parse_pixels(pixels, lines, path)
    return {
        "images": images, "labels": np.asarray(labels, np.int64), "usage": np.asarray(usage),
        "orig_row": np.asarray(orig, np.int64), "line": np.asarray(lines, np.int64),
    }


def read_fer2013(paths: str | Path | list[str | Path], split: str | None) -> FERDataset:
    """FER2013 split from one or more CSVs (e.g. the rebuilt file plus the unplaced rows), concatenated."""
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    parts = [read_fer2013_rows(p, fer_usages(split)) for p in paths]
    images = np.concatenate([p["images"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    ids = [f"{path.name}:{line}" for path, p in zip(paths, parts) for line in p["line"]]
    name = f"fer2013[{split or 'all'}]"
    ds = FERDataset(images=images, labels=labels, classes=FER2013_CLASSES, ids=ids, name=name)
    log.info("%s", ds.summary())
    return ds


def read_ferplus_votes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``fer2013new.csv``.

    Returns:
        ``usage`` (R,) str, ``names`` (R,) str (blank = dropped by FER+), ``votes`` int64 ``(R, 10)``
        in :data:`FERPLUS_COLUMNS` order; R = data rows, index = original FER2013 row.
    """
    path = Path(path)
    usage, names, votes = [], [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = _read_header(reader, path)
        expect = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                  "fear", "contempt", "unknown", "NF"]
        if header != expect:
            raise MalformedFileError(f"{path}:1: header {header} is not the FER+ header {expect}")
        for k, row in enumerate(reader):
            line = k + 2
            if len(row) != len(expect):
                raise MalformedFileError(f"{path}:{line}: {len(row)} fields, expected {len(expect)}")
            try:
                v = [int(x) for x in row[2:]]
            except ValueError:
                raise MalformedFileError(f"{path}:{line}: vote counts must be integers: {row[2:]}") from None
            if min(v) < 0:
                raise MalformedFileError(f"{path}:{line}: negative vote count")
            usage.append(row[0].strip())
            names.append(row[1].strip())
            votes.append(v)
    return np.asarray(usage), np.asarray(names), np.asarray(votes, np.int64).reshape(-1, 10)


def ferplus_labels(votes: np.ndarray, rule: str = "majority") -> np.ndarray:
    """Hard FER+ labels from votes ``(N, 10)`` (8 emotions, unknown, NF); -1 marks a dropped row.

    Rules:
        ``majority``: the winner is the column with most votes over all ten (ties -> the first
            column in FER+ order, as ``argmax``); dropped when unknown or NF wins (ties with an
            emotion go to the emotion) or no emotion has a vote.
        ``strict``: FER+ reference code's "majority" mode: single votes are discarded as
            outliers, then the winner needs more than half of the remaining votes, and must be
            an emotion.
    """
    votes = np.asarray(votes, dtype=np.int64)
    if votes.ndim != 2 or votes.shape[1] != 10:
        raise ValueError(f"votes must be (N, 10), got {votes.shape}")
    if rule == "majority":
        win = votes.argmax(1)
        ok = (win < 8) & (votes[:, :8].sum(1) > 0)
    elif rule == "strict":
        v = np.where(votes <= 1, 0, votes)
        win = v.argmax(1)
        top = v[np.arange(len(v)), win]
        ok = (win < 8) & (top * 2 > v.sum(1))
    else:
        raise ValueError(f"unknown FER+ vote rule {rule!r}; use majority or strict")
    return np.where(ok, win, -1)


def join_ferplus_votes(fer_csv: str | Path, ferplus_csv: str | Path,
                       split: str | None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The split's FER2013 rows joined with their ``fer2013new.csv`` rows by ``orig_row`` == FER+ data-row index.

    Returns:
        ``rows`` (:func:`read_fer2013_rows`, N rows), FER+ ``names`` ``(N,)`` (blank = dropped by FER+) and
        ``votes`` int64 ``(N, 10)`` of the same images. An ``orig_row`` outside FER+ or a FER+ row of another
        ``Usage`` raises :class:`MalformedFileError` naming the FER2013 line.
    """
    fer_csv, ferplus_csv = Path(fer_csv), Path(ferplus_csv)
    rows = read_fer2013_rows(fer_csv, fer_usages(split))
    usage, names, votes = read_ferplus_votes(ferplus_csv)
    r = rows["orig_row"]
    bad = (r < 0) | (r >= len(names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MalformedFileError(f"{fer_csv}:{rows['line'][i]}: orig_row {r[i]} outside {ferplus_csv}'s "
                                 f"{len(names)} rows")
    mismatch = usage[r] != rows["usage"]
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise MalformedFileError(f"{fer_csv}:{rows['line'][i]}: Usage {rows['usage'][i]} but {ferplus_csv} row "
                                 f"{r[i]} says {usage[r[i]]}: the files are not joined by row")
    return rows, names[r], votes[r]


def read_ferplus(fer_csv: str | Path, ferplus_csv: str | Path, split: str | None,
                 vote: str = "majority") -> FERDataset:
    """FER+ split: FER2013 pixels joined with ``fer2013new.csv`` by ``orig_row`` == FER+ data-row index.

    Rows FER+ left blank (no image name) and rows the vote rule drops are skipped; the vote
    distribution over the 8 emotions becomes ``soft_labels`` (classes in FER+ column order).
    """
    fer_csv = Path(fer_csv)
    rows, names, v = join_ferplus_votes(fer_csv, ferplus_csv, split)
    hard = ferplus_labels(v, vote)
    named = names != ""
    keep = named & (hard >= 0)
    log.info("ferplus[%s]: %d FER2013 rows, %d without a FER+ name, %d dropped by the %s vote, %d kept",
             split, len(v), int((~named).sum()), int((named & (hard < 0)).sum()), vote, int(keep.sum()))
    idx = np.flatnonzero(keep)
    emo = v[idx, :8].astype(np.float32)
    soft = emo / emo.sum(1, keepdims=True)
    ids = [f"{fer_csv.name}:{rows['line'][i]}" for i in idx]
    ds = FERDataset(images=rows["images"][idx], labels=hard[idx], classes=FERPLUS_CLASSES, soft_labels=soft,
                    ids=ids, name=f"ferplus[{split or 'all'}]", meta={"vote": vote})
    log.info("%s", ds.summary())
    return ds
