"""One canonical label space for facial expressions, and explicit per-dataset label maps.

Every dataset reader turns its own codes (FER2013 ``emotion`` 0..6, RAF-DB 1..7, AffectNet 0..7,
CK+ 0..7, FER+ vote columns, folder names) into *canonical names* through the maps below, so
datasets can be merged (seed 003's hybrid dataset) and compared with any model's ``classes``.
The canonical order is FER2013's seven classes followed by ``contempt``, so a 7-class FER2013
model's outputs are the first seven canonical indices.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

CANONICAL_CLASSES: tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt",
)
FER2013_CLASSES: tuple[str, ...] = CANONICAL_CLASSES[:7]
# FER+ vote columns, in file order (the last two, unknown / NF, are not classes).
FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt",
)

# Per-dataset code -> canonical name. Sources: FER2013 Kaggle README; RAF-DB basic README
# (1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral); AffectNet paper
# (0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt; 8-10 = none /
# uncertain / no-face, dropped); CK+ Emotion files (0 neutral, 1 anger, 2 contempt, 3 disgust,
# 4 fear, 5 happy, 6 sadness, 7 surprise).
LABEL_MAPS: dict[str, dict[int, str]] = {
    "fer2013": dict(enumerate(FER2013_CLASSES)),
    "rafdb": {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"},
    "affectnet": {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "angry",
                  7: "contempt"},
    "ckplus": {0: "neutral", 1: "angry", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy", 6: "sad",
               7: "surprise"},
}

# Spellings seen in folder names and CSV headers -> canonical name (lower-cased keys).
SYNONYMS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "smile": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "suprise": "surprise",
    "neutral": "neutral", "calm": "neutral",
    "contempt": "contempt", "contemptuous": "contempt",
}


class LabelError(ValueError):
    """A class name or code that is not in the label map (the message names the file)."""


def canonical_name(name: str, where: str = "") -> str:
    """Canonical class name of a spelling such as ``"Happiness"`` or ``"anger"``.

    Raises:
        LabelError: the name is not a known expression (``where`` names the file / folder).
    """
    key = str(name).strip().lower().replace("-", "_")
    if key in SYNONYMS:
        return SYNONYMS[key]
    at = f"{where}: " if where else ""
    raise LabelError(f"{at}unknown class name {name!r}; known: {', '.join(sorted(SYNONYMS))}")


def map_code(dataset: str, code: int, where: str = "") -> str:
    """Canonical name of ``code`` in ``dataset``'s label map (see ``LABEL_MAPS``)."""
    table = LABEL_MAPS[dataset]
    if code not in table:
        at = f"{where}: " if where else ""
        raise LabelError(f"{at}label {code!r} not in the {dataset} map {sorted(table)}")
    return table[code]


def normalise_classes(classes: Iterable[str], where: str = "") -> tuple[str, ...]:
    """Canonical names of a class list, checking for duplicates."""
    out = tuple(canonical_name(c, where) for c in classes)
    if len(set(out)) != len(out):
        raise LabelError(f"{where}: duplicate classes after normalisation: {out}")
    return out


def remap_indices(src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """Lookup table ``(len(src),)`` int64: index in ``dst`` of each ``src`` class, -1 if absent.

    Names are compared canonically, so ``"happiness"`` in a model matches ``"happy"`` in a dataset.
    """
    dst_idx: Mapping[str, int] = {canonical_name(c): i for i, c in enumerate(dst)}
    return np.array([dst_idx.get(canonical_name(c), -1) for c in src], dtype=np.int64)
