"""Datasets: one reader per format, a canonical label space, transforms, hybrid merging and the crop cache.

Entry point: :func:`build_dataset` (``"fer2013:/path/fer2013.csv.gz"``, see :mod:`lightfer.data.spec`).
"""
from lightfer.data.dataset import FERDataset, to_tensor
from lightfer.data.fer2013 import MalformedFileError, ferplus_labels
from lightfer.data.hybrid import balance_by_augmentation, balanced_sampler, class_weights, merge_datasets
from lightfer.data.labels import CANONICAL_CLASSES, FER2013_CLASSES, FERPLUS_CLASSES, LabelError
from lightfer.data.spec import build_dataset, parse_spec

__all__ = [
    "CANONICAL_CLASSES", "FER2013_CLASSES", "FERPLUS_CLASSES", "FERDataset", "LabelError", "MalformedFileError",
    "balance_by_augmentation", "balanced_sampler", "build_dataset", "class_weights", "ferplus_labels",
    "merge_datasets", "parse_spec", "to_tensor",
]
