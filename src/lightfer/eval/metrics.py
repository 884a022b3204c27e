"""Classification metrics from labels and scores, without scikit-learn.

Definitions (the ones reported by seeds 000, 001 and 003):

* confusion matrix ``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``;
* accuracy = trace / total; per-class accuracy of ``c`` = recall of ``c`` = ``cm[c, c] / sum_p cm[c, p]``;
* UAR (unweighted average recall) = mean recall over classes that occur in the ground truth;
* precision ``c`` = ``cm[c, c] / sum_t cm[t, c]`` (0 when ``c`` is never predicted), F1 the harmonic
  mean (0 when both are 0); macro = plain mean over classes present in truth or predictions
  (as scikit-learn's default label set), weighted = mean weighted by true support;
* one-vs-rest AUC of ``c``: the Mann-Whitney probability that a random sample of ``c`` scores
  higher on column ``c`` than a random other sample (ties count 1/2); undefined (None) when ``c``
  has no positives or no negatives; macro AUC averages the defined ones;
* paired comparison of two models on the same samples (:func:`paired_comparison`): ``b`` = samples only
  model A gets right, ``c`` = only model B; exact two-sided McNemar p = P(Binomial(b + c, 1/2) as or more
  extreme than b), and a 95% normal interval for the accuracy difference ``(b - c) / n`` with the paired
  standard error ``sqrt(b + c - (b - c)^2 / n) / n``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _rank_average(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x (N,)`` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores (N,)`` for boolean ``positive (N,)``; None when one side is empty."""
    positive = np.asarray(positive, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    r = _rank_average(scores)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ovr_auc(y_true: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """One-vs-rest AUC per class from ``scores (N, C)`` (probabilities or logits)."""
    scores = np.asarray(scores)
    y_true = np.asarray(y_true).ravel()
    return [binary_auc(y_true == c, scores[:, c]) for c in range(scores.shape[1])]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def metrics_from_confusion(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, UAR, macro / weighted P/R/F1 and per-class figures from a confusion matrix ``(C, C)``."""
    cm = np.asarray(cm, dtype=np.int64)
    c = cm.shape[0]
    if cm.shape != (c, c):
        raise ValueError(f"confusion matrix must be square, got {cm.shape}")
    classes = list(classes) if classes is not None else [str(i) for i in range(c)]
    total = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    in_truth = support > 0
    w = support / total if total else np.zeros(c)

    def mean(v: np.ndarray, mask: np.ndarray) -> float:
        return float(v[mask].mean()) if mask.any() else 0.0

    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "accuracy": float(recall[i]), "support": int(support[i]), "predicted": int(predicted[i])}
        for i, name in enumerate(classes)
    }
    return {
        "num_samples": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "uar": mean(recall, in_truth),
        "macro": {"precision": mean(precision, present), "recall": mean(recall, present), "f1": mean(f1, present)},
        "weighted": {"precision": float((precision * w).sum()), "recall": float((recall * w).sum()),
                     "f1": float((f1 * w).sum())},
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": classes,
    }


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of the module doc from true labels ``(N,)`` and class scores ``(N, C)``.

    Predictions are ``argmax`` of ``scores`` (first index on ties).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got {scores.shape}")
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    if len(y_true) != len(scores):
        raise ValueError(f"{len(y_true)} labels but {len(scores)} score rows")
    cm = confusion_matrix(y_true, scores.argmax(1), scores.shape[1])
    out = metrics_from_confusion(cm, classes)
    aucs = ovr_auc(y_true, scores)
    for name, a in zip(out["classes"], aucs):
        out["per_class"][name]["auc"] = a
    defined = [a for a in aucs if a is not None]
    out["auc_macro"] = float(np.mean(defined)) if defined else None
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` vs ``c`` discordant pairs (1.0 when there are none)."""
    from scipy.stats import binomtest

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Paired accuracy comparison of models A and B from per-sample correctness ``(N,)`` booleans.

    Returns accuracies, ``only_a`` / ``only_b`` (discordant counts), ``diff`` = acc A - acc B, its 95%
    half-width ``ci95`` and the exact McNemar ``p`` (see the module doc).
    """
    a = np.asarray(correct_a, bool).ravel()
    b = np.asarray(correct_b, bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"correctness vectors differ in length: {a.shape} vs {b.shape}")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    se = float(np.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n) if n else 0.0
    return {"num_samples": n, "accuracy_a": float(a.mean()) if n else 0.0, "accuracy_b": float(b.mean()) if n else 0.0,
            "only_a": only_a, "only_b": only_b, "diff": (only_a - only_b) / n if n else 0.0, "ci95": 1.96 * se,
            "p_mcnemar": mcnemar_exact(only_a, only_b)}
