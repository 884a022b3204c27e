"""Expression classifiers, created by name: ``create_model("fer_mini_xception", pretrained=True)``."""
from lightfer.models.registry import (
    DEFAULT_MODEL,
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    PretrainedCfg,
    count_params,
    create_model,
    get_pretrained_cfg,
    list_models,
    preprocess_crops,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "FER2013_CLASSES",
    "FERPLUS_CLASSES",
    "PretrainedCfg",
    "count_params",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "preprocess_crops",
    "register_model",
]
