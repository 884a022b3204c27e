"""Fixtures for the video tests: face tiles cut from real photos and a shared Analyzer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from video_helpers import TILE

from lightfer.eval.video_bench import face_tile


@pytest.fixture(scope="session")
def tiles(astronaut: np.ndarray, portraits: dict[str, Path]) -> dict[str, np.ndarray]:
    """Head-and-shoulders tiles (TILE, TILE, 3) of three different people."""
    from lightfer.io import read_image

    return {
        "astronaut": face_tile(astronaut, (177, 56, 270, 176), TILE),
        "trump": face_tile(read_image(portraits["trump"]), (83, 76, 177, 194), TILE),
        "obama": face_tile(read_image(portraits["obama"]), (173, 46, 342, 292), TILE),
    }


@pytest.fixture(scope="session")
def analyzer() -> "lightfer.Analyzer":  # noqa: F821
    """The default pipeline (RetinaFace + mini-Xception, ONNX Runtime, 1 thread)."""
    from lightfer.pipeline import Analyzer

    return Analyzer(threads=1)
