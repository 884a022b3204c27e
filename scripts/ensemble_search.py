#!/usr/bin/env python
"""Choose a probability-averaging ensemble on one split and report it, paired, on another.

Every subset of two or more (at most ``--max-members``) ``--member`` models (checkpoints, ``checkpoint@live`` for a
run's live weights, or registered names) is scored on ``--select`` (each member's probabilities computed once,
flip-averaged with ``--tta``); the subset with the highest accuracy there is then scored on ``--report`` against
``--compare`` (exact McNemar test on the same samples; ``--compare-tta`` / ``--no-compare-tta`` scores it with or
without flip TTA whatever ``--tta`` says, e.g. two networks without TTA against one with it, at the same cost).
The chosen members are printed in the syntax ``scripts/ship_model.py`` takes, so the ensemble ships as it was measured.

    python scripts/ensemble_search.py --data cache:crops/fer64a0 --tta \\
        --member shufflenet_v2_x0_5_fer2013 --member runs/a/best.pt@live --member runs/b/best.pt \\
        --compare shufflenet_v2_x0_5_fer2013
    python scripts/ensemble_search.py --data cache:crops/fer64a0 --max-members 2 --compare-tta \\
        --member shufflenet_v2_x0_5_fer2013 --member shufflenet_v2_x0_5_fer2013_robust \\
        --compare shufflenet_v2_x0_5_fer2013
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from lightfer.data import build_dataset
from lightfer.eval.evaluate import align_labels, load_classifier, predict_probs
from lightfer.eval.metrics import confusion_matrix, metrics_from_confusion, paired_comparison
from lightfer.models.shipped import split_member


def load_member(spec: str) -> torch.nn.Module:
    """``path``, ``path@live`` / ``path@ema`` or a registered name -> classifier in eval mode."""
    try:
        path, which = split_member(spec)
    except ValueError as e:
        raise SystemExit(f"--member: {e}") from None
    return load_classifier(path, use_ema=which != "live")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset spec, e.g. cache:crops/fer64a0")
    ap.add_argument("--member", action="append", required=True, help="checkpoint[@live] or model name (repeat)")
    ap.add_argument("--select", default="val", help="split the ensemble is chosen on")
    ap.add_argument("--report", default="test", help="split it is reported on")
    ap.add_argument("--compare", help="model the chosen ensemble is tested against on --report")
    ap.add_argument("--tta", action="store_true", help="average every model over the horizontal flip")
    ap.add_argument("--compare-tta", action=argparse.BooleanOptionalAction, default=None,
                    help="score --compare with (or without) flip TTA (default: as --tta)")
    ap.add_argument("--max-members", type=int, default=0, help="largest subset searched (0: all members)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if len(a.member) < 2:
        raise SystemExit("give at least two --member")
    if a.max_members == 1 or a.max_members < 0:
        raise SystemExit("--max-members: 2 or more (0: all members)")
    models = [load_member(m) for m in a.member]
    classes = tuple(models[0].pretrained_cfg.classes)
    if any(tuple(m.pretrained_cfg.classes) != classes for m in models):
        raise SystemExit("members disagree on classes; an ensemble needs one label set")

    def split_probs(split: str, nets: list[torch.nn.Module], tta: list[bool]) -> tuple[np.ndarray, list[np.ndarray]]:
        ds = align_labels(build_dataset(a.data, split), classes)
        return ds.labels, [predict_probs(n, ds.images, tta_flip=t) for n, t in zip(nets, tta)]

    def acc(labels: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return metrics_from_confusion(confusion_matrix(labels, p.argmax(1), len(classes)))

    labels, probs = split_probs(a.select, models, [a.tta] * len(models))
    for spec, p in zip(a.member, probs):
        print(f"{a.select:5s} {'member ' + spec:70s} acc {acc(labels, p)['accuracy']:.4f}")
    best, best_acc = None, -1.0
    for k in range(2, (a.max_members or len(models)) + 1):
        for subset in itertools.combinations(range(len(models)), k):
            m = acc(labels, np.mean([probs[i] for i in subset], axis=0))
            print(f"{a.select:5s} {' + '.join(a.member[i] for i in subset):70s} acc {m['accuracy']:.4f} "
                  f"uar {m['uar']:.4f}")
            if m["accuracy"] > best_acc:
                best, best_acc = subset, m["accuracy"]
    assert best is not None
    chosen = [a.member[i] for i in best]
    print(f"chosen on {a.select}: {','.join(chosen)}")
    others = [load_classifier(a.compare)] if a.compare else []
    compare_tta = a.tta if a.compare_tta is None else a.compare_tta
    labels, probs = split_probs(a.report, [models[i] for i in best] + others,
                                [a.tta] * len(best) + [compare_tta] * len(others))
    ens = np.mean(probs[: len(best)], axis=0)
    m = acc(labels, ens)
    print(f"{a.report:5s} ensemble acc {m['accuracy']:.4f} uar {m['uar']:.4f} macro-F1 {m['macro']['f1']:.4f}")
    if others:
        ref = probs[-1]
        c = paired_comparison(ens.argmax(1) == labels, ref.argmax(1) == labels)
        print(f"{a.report:5s} vs {a.compare}{' (flip TTA)' if compare_tta else ''} "
              f"({acc(labels, ref)['accuracy']:.4f}): {100 * c['diff']:+.2f} "
              f"± {100 * c['ci95']:.2f} points, {c['only_a']} vs {c['only_b']} samples, "
              f"exact McNemar p = {c['p_mcnemar']:.2g}")


if __name__ == "__main__":
    main()
