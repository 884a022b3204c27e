"""Known-answer helpers shared by the ports' tests (dlib, MediaPipe): the fetched third-party file and the
reference script's inputs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def fetched(asset: str) -> Path:
    """Path of a third-party file, fetched (and checksummed) by :mod:`lightfer.assets` when missing."""
    from lightfer.assets import fetch

    return fetch([asset])[asset]


def reference_chips(script: str) -> dict[str, np.ndarray]:
    """``chips()`` of ``scripts/<script>``: the inputs its fixture was written for (skips without scikit-image)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / "scripts" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pytest.importorskip("skimage")
    return mod.chips()
