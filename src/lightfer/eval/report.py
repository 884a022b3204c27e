"""Evaluation reports: a terminal table, a JSON file and a confusion-matrix picture (matplotlib Agg)."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _pct(x: float | None) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def format_table(metrics: dict[str, Any], title: str = "") -> str:
    """Readable text: headline figures, then one row per class (precision, recall = accuracy, F1, AUC)."""
    lines = [title] if title else []
    lines.append(f"samples {metrics['num_samples']}   accuracy {_pct(metrics['accuracy']).strip()}%   "
                 f"UAR {_pct(metrics['uar']).strip()}%   AUC(macro) {_pct(metrics.get('auc_macro')).strip()}%")
    wd = metrics.get("with_dropped")
    if wd:
        names = ", ".join(f"{c} {n}" for c, n in wd["dropped_classes"].items())
        lines.append(f"all {wd['num_samples']} samples, {wd['num_classes']} classes, the model's missing classes "
                     f"({names}) counted as errors: accuracy {_pct(wd['accuracy']).strip()}%   "
                     f"UAR {_pct(wd['uar']).strip()}%")
    pc = metrics.get("compare")
    if pc:
        lines.append(f"paired vs {pc.get('model_b', 'B')}{' (flip TTA)' if pc.get('tta_b') else ''} on the same "
                     f"{pc['num_samples']} samples: {_pct(pc['accuracy_a']).strip()}% vs "
                     f"{_pct(pc['accuracy_b']).strip()}%, difference {100 * pc['diff']:+.2f} "
                     f"(95% CI ±{100 * pc['ci95']:.2f}); only this model right {pc['only_a']}, only the other "
                     f"{pc['only_b']}; exact McNemar p = {pc['p_mcnemar']:.3g}")
        if pc.get("data_b") and pc["data_b"] != metrics.get("data"):
            lines.append(f"  ({pc.get('model_b', 'B')} read its crops of the same samples from {pc['data_b']})")
    m, w = metrics["macro"], metrics["weighted"]
    lines.append(f"macro    P {_pct(m['precision'])}  R {_pct(m['recall'])}  F1 {_pct(m['f1'])}")
    lines.append(f"weighted P {_pct(w['precision'])}  R {_pct(w['recall'])}  F1 {_pct(w['f1'])}")
    width = max([len(c) for c in metrics["classes"]] + [5])
    lines.append(f"{'class':<{width}}  support  precision  recall(acc)      F1     AUC")
    for name in metrics["classes"]:
        r = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {r['support']:7d}     {_pct(r['precision'])}       {_pct(r['recall'])}  "
                     f"{_pct(r['f1'])}  {_pct(r.get('auc'))}")
    cm = np.asarray(metrics["confusion_matrix"])
    short = [c[:7] for c in metrics["classes"]]
    lines.append("confusion matrix (rows = true, columns = predicted):")
    lines.append(" " * (width + 1) + " ".join(f"{s:>7}" for s in short))
    for name, row in zip(metrics["classes"], cm):
        lines.append(f"{name:<{width}} " + " ".join(f"{int(v):7d}" for v in row))
    cost = metrics.get("cost")
    if cost:
        parts = [f"params {cost['params'] / 1e6:.3f} M", f"FLOPs {cost['flops'] / 1e6:.1f} M"]
        if cost.get("latency_ms") is not None:
            parts.append(f"latency {cost['latency_ms']:.2f} ms/face (batch 1, {cost.get('threads')} thread(s), "
                         f"{cost.get('backend', 'torch')})")
        if cost.get("onnx_latency_ms") is not None:
            parts.append(f"ONNX Runtime {cost['onnx_latency_ms']:.2f} ms/face")
        lines.append("   ".join(parts))
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON (NumPy values converted, NaN -> null); ``-`` is not handled here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2))
    return path


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path, normalize: bool = True,
                   title: str = "") -> Path:
    """Save the confusion matrix ``(C, C)`` as a PNG heat map (row-normalised with counts annotated)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n), dpi=120)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:  # wrapped to the figure's width: eval's titles (model, data, sample counts, TTA) run long
        ax.set_title(textwrap.fill(title, width=max(24, int(6.5 * n))), fontsize=9)
    hi = shown.max() if shown.size else 1.0
    for t in range(n):
        for p in range(n):
            txt = f"{shown[t, p]:.2f}\n({int(cm[t, p])})" if normalize else f"{int(cm[t, p])}"
            ax.text(p, t, txt, ha="center", va="center", fontsize=7,
                    color="white" if shown[t, p] > 0.6 * hi else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
