#!/usr/bin/env python
"""Write the FER+ annotators' vote distributions over a FER2013 crop cache as a ``teacher.logits_file``.

FER+ re-labelled every FER2013 image with ten crowd votes. For a model trained on FER2013's own labels these
votes are a per-image soft target: with ``loss.task: kd``, ``temperature: 1`` and ``alpha: a`` the engine's
loss ``(1 - a) CE(label) + a KL(votes || student)`` has the gradient of cross-entropy against the mixed target
``(1 - a) onehot(label) + a votes`` (the KL and the CE differ by the votes' entropy, a constant). The "teacher"
here is the annotators; nothing is learned from the test splits (only the split written is read).

Each row is ``log`` of the image's votes over the cache's classes (FER+'s ``contempt``, ``unknown`` and ``NF``
columns are dropped, the rest renormalised); an image with none of those votes left keeps its own one-hot label
(its KD term then equals CE on the label); an id whose line is not a row of the split, or whose FER2013 row holds another label than
the cache's, is refused. Rows follow the cache's order; the cache's
``ids`` (``fer2013.csv.gz:LINE``) give the line of the FER2013 csv, whose ``orig_row`` (or data-row index) is
the FER+ row of the same image: :func:`lightfer.data.fer2013.join_ferplus_votes`, the join ``read_ferplus`` uses
(it refuses FER+ rows of another usage).

    python scripts/vote_targets.py --data cache:crops/fer64a0 --split train \
        --fer-csv ../shared/data/fer2013/fer2013.csv.gz --votes ../shared/data/ferplus/fer2013new.csv \
        --out runs/teachers/ferplus_votes_train.pt

It prints how many rows got votes and how often the votes' majority agrees with the FER2013 label (64.5% on
the shared training split; rows joined wrongly agreed on 18%).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from lightfer.data import build_dataset
from lightfer.data.fer2013 import join_ferplus_votes
from lightfer.data.labels import FER2013_CLASSES, FERPLUS_CLASSES, remap_indices
from lightfer.train.checkpoint import save_checkpoint

_LINE = re.compile(r":(\d+)$")


def cache_lines(ids: np.ndarray) -> np.ndarray:
    """FER2013 csv lines ``(N,)`` from cache ids ``(N,)`` ending in ``:LINE`` (an id without one raises)."""
    lines = np.empty(len(ids), np.int64)
    for i, sid in enumerate(map(str, ids)):
        m = _LINE.search(sid)
        if m is None:
            raise ValueError(f"id {sid!r} has no ':LINE' suffix; the cache must come from the FER2013 csv")
        lines[i] = int(m.group(1))
    return lines


def vote_targets(lines: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], line_to_index: dict[int, int],
                 votes: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image target distributions ``(N, K)`` and a ``(N,)`` bool "has votes" mask.

    ``lines`` (N,) FER2013 csv lines of the cache's images; ``labels`` (N,) indices into ``classes``;
    ``line_to_index`` csv line -> row of ``votes`` ``(M, 10)``, the FER+ votes of the split's images joined by
    :func:`lightfer.data.fer2013.join_ferplus_votes` (a line without one raises, naming the ``split``)."""
    k = len(classes)
    cols = np.full(votes.shape[1], -1, np.int64)  # FER+ column -> class index, -1 = dropped (unknown, NF)
    cols[:len(FERPLUS_CLASSES)] = remap_indices(FERPLUS_CLASSES, classes)
    out = np.eye(k, dtype=np.float64)[labels]
    has = np.zeros(len(lines), bool)
    for i, line in enumerate(lines.tolist()):
        j = line_to_index.get(line)
        if j is None:
            raise ValueError(f"line {line}: not a {split} row of the FER2013 csv, so no FER+ votes of that split")
        v = np.zeros(k)
        np.add.at(v, cols[cols >= 0], votes[j][cols >= 0])
        if v.sum() > 0:
            out[i] = v / v.sum()
            has[i] = True
    return out, has


def main() -> None:
    """CLI: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 crop cache spec, e.g. cache:crops/fer64a0")
    ap.add_argument("--split", default="train", help="split whose targets are written (train)")
    ap.add_argument("--fer-csv", required=True, help="the FER2013 csv the cache was prepared from")
    ap.add_argument("--votes", required=True, help="FER+ fer2013new.csv")
    ap.add_argument("--out", required=True, help="logits file for teacher.logits_file")
    a = ap.parse_args()
    ds = build_dataset(a.data, a.split)
    ids = getattr(ds, "ids", None)
    if ids is None:
        raise SystemExit(f"{a.data} {a.split}: the dataset has no ids to match FER+ rows with")
    rows, _, votes = join_ferplus_votes(a.fer_csv, a.votes, a.split)
    line_to_index = {line: i for i, line in enumerate(rows["line"].tolist())}
    lines, labels = cache_lines(np.asarray(ids)), np.asarray(ds.labels)
    if tuple(ds.classes) == FER2013_CLASSES:  # FER2013 codes index FER2013_CLASSES: the csv must hold the cache's labels
        for sid, line, y in zip(map(str, ids), lines.tolist(), labels.tolist()):
            j = line_to_index.get(line)
            if j is not None and rows["labels"][j] != y:
                raise SystemExit(f"{a.data} {a.split}: {sid} is labelled {ds.classes[y]} but line {line} of "
                                 f"{a.fer_csv} says {FER2013_CLASSES[rows['labels'][j]]}: the cache comes from another csv")
    target, has = vote_targets(lines, labels, tuple(ds.classes), line_to_index, votes, a.split)
    agree = (target[has].argmax(1) == labels[has]).mean()
    print(f"{a.split}: {has.sum()} of {len(has)} images with votes; vote majority = FER2013 label on {agree:.1%}")
    logits = torch.from_numpy(np.log(np.clip(target, 1e-8, None))).float()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"logits": logits, "num_samples": len(ds), "teacher": "ferplus-votes", "flip": False,
                     "classes": list(ds.classes), "votes": str(a.votes)}, a.out)
    print(f"wrote {a.out}: {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
