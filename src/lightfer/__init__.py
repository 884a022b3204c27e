"""lightfer: find every face and tell its facial expression, fast on a CPU.

    >>> import lightfer
    >>> analyzer = lightfer.Analyzer()            # RetinaFace + default expression model, CPU
    >>> result = analyzer("group.jpg")            # path, PIL image or RGB uint8 array (H, W, 3)
    >>> [(f.label, f.box) for f in result.faces]
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

__all__ = ["Analyzer", "Face", "FrameResult", "ImageReadError", "create_model", "list_models", "read_image", "__version__"]

if TYPE_CHECKING:
    from lightfer.io import ImageReadError, read_image
    from lightfer.models import create_model, list_models
    from lightfer.pipeline import Analyzer
    from lightfer.structures import Face, FrameResult

_LAZY = {
    "Analyzer": "lightfer.pipeline",
    "Face": "lightfer.structures",
    "FrameResult": "lightfer.structures",
    "ImageReadError": "lightfer.io",
    "read_image": "lightfer.io",
    "create_model": "lightfer.models",
    "list_models": "lightfer.models",
}


def __getattr__(name: str) -> Any:
    """Import heavy parts (torch, onnxruntime) only when first used, so ``lightfer --help`` is fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightfer' has no attribute {name!r}")
