"""Metric known answers against hand-computed confusion matrices; report table, JSON and PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lightfer.eval.metrics import binary_auc, classification_metrics, confusion_matrix, metrics_from_confusion, ovr_auc
from lightfer.eval.report import format_table, plot_confusion, write_json


def test_confusion_matrix_known_answer_and_errors():
    cm = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 3)


def test_metrics_hand_computed():
    m = metrics_from_confusion(np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]]), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro"]["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted"]["precision"] == pytest.approx(4.5 / 6)
    assert m["weighted"]["recall"] == pytest.approx(m["accuracy"])  # always, by definition
    assert m["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "accuracy": 2 / 3,
                                                 "support": 3, "predicted": 2})


def test_absent_and_never_true_classes():
    # class 3 never occurs at all; class 2 is predicted but never true
    cm = np.array([[3, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm)
    assert m["uar"] == pytest.approx((0.75 + 0.5) / 2)  # over classes present in the truth
    assert m["macro"]["recall"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)  # over truth ∪ predicted (sklearn)
    assert m["macro"]["precision"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert m["per_class"]["2"]["precision"] == 0.0 and m["per_class"]["3"]["f1"] == 0.0
    empty = metrics_from_confusion(np.zeros((2, 2), int))
    assert empty["accuracy"] == 0.0 and empty["uar"] == 0.0


def test_auc_known_answers_with_ties():
    pos = np.array([1, 1, 0, 0, 0], bool)
    assert binary_auc(pos, [0.9, 0.4, 0.4, 0.1, 0.5]) == pytest.approx(4.5 / 6)
    assert binary_auc(pos, [5, 4, 3, 2, 1]) == 1.0 and binary_auc(pos, [1, 2, 3, 4, 5]) == 0.0
    assert binary_auc(pos, [7, 7, 7, 7, 7]) == 0.5
    assert binary_auc(np.zeros(3, bool), [1, 2, 3]) is None
    # invariant to any monotone transform of the scores (logits vs probabilities)
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 3, 200), rng.normal(size=(200, 3))
    np.testing.assert_allclose(ovr_auc(y, s), ovr_auc(y, np.exp(s) * 3 + 1))


def test_auc_matches_brute_force_pairs():
    rng = np.random.default_rng(1)
    pos = rng.random(60) < 0.3
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    p, n = s[pos], s[~pos]
    brute = ((p[:, None] > n[None]).sum() + 0.5 * (p[:, None] == n[None]).sum()) / (len(p) * len(n))
    assert binary_auc(pos, s) == pytest.approx(brute)


def test_classification_metrics_from_scores():
    y = np.array([0, 0, 1, 2])
    scores = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.8]])
    m = classification_metrics(y, scores, ["x", "y", "z"])
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["per_class"]["x"]["auc"] == pytest.approx(3 / 4)  # x: positives .8 .3 vs negatives .2 .5
    assert m["auc_macro"] == pytest.approx(np.mean([3 / 4, 1.0, 1.0]))
    with pytest.raises(ValueError, match="4 labels but 3 score rows"):
        classification_metrics(y, scores[:3])


def test_report_table_json_and_png(tmp_path):
    m = classification_metrics([0, 1, 1, 2], np.eye(3)[[0, 1, 2, 2]], ["angry", "happy", "neutral"])
    m["cost"] = {"params": 56_000, "flops": 20_000_000, "latency_ms": 1.5, "threads": 1}
    text = format_table(m, "toy")
    assert "accuracy 75.00%" in text and "UAR 83.33%" in text and "params 0.056 M" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("happy")]
    assert rows[-1].split()[1:] == ["0", "1", "1"]  # confusion row of 'happy'
    path = write_json({**m, "nan": float("nan"), "arr": np.arange(3)}, tmp_path / "r" / "report.json")
    back = json.loads(path.read_text())
    assert back["nan"] is None and back["arr"] == [0, 1, 2] and back["accuracy"] == 0.75
    png = plot_confusion(np.array(m["confusion_matrix"]), m["classes"], tmp_path / "cm.png", title="toy")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_confusion_plot_keeps_a_long_title_inside_the_picture(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from lightfer.eval.report import plot_confusion

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to measure it after saving
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    title = "shufflenet_v2_x0_5_fer2013 on cache[test] (3573 of 3573 samples, flip TTA)"
    plot_confusion(np.eye(7) * 10, classes, tmp_path / "cm.png", title=title)
    fig = kept[0]
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    assert fig.axes[0].get_title().replace("\n", " ") == title


def test_paired_comparison_and_exact_mcnemar():
    from math import comb

    from lightfer.eval.metrics import mcnemar_exact, paired_comparison

    a = np.array([1, 1, 1, 0, 0, 1, 1, 0, 1, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1], bool)
    r = paired_comparison(a, b)
    assert (r["only_a"], r["only_b"], r["num_samples"]) == (3, 1, 10)
    assert r["accuracy_a"] == pytest.approx(0.7) and r["accuracy_b"] == pytest.approx(0.5)
    assert r["diff"] == pytest.approx(0.2)
    assert r["ci95"] == pytest.approx(1.96 * np.sqrt(4 - 4 / 10) / 10)
    brute = 2 * sum(comb(4, k) for k in (0, 1)) / 2 ** 4  # two-sided: P(X <= 1) + P(X >= 3), X ~ Bin(4, 1/2)
    assert r["p_mcnemar"] == pytest.approx(brute)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(325, 276) == pytest.approx(0.0503, abs=5e-4)  # the model card's CE vs F-PDLS pair
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison(a, b[:5])
