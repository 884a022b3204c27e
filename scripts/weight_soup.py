#!/usr/bin/env python
"""Average the weights of networks of one lineage ("model soup") into a checkpoint.

The members (a run's checkpoint for its EMA, ``checkpoint@live`` for its live weights, or a shipped model name)
must share one architecture and input; see :func:`lightfer.models.shipped.weight_soup`. The output reads like a
training checkpoint, so ``lightfer eval``, ``scripts/ship_model.py`` and ``scripts/ensemble_search.py`` take it:

    python scripts/weight_soup.py runs/x/last.pt@live shufflenet_v2_x1_0_fer2013 --weights 0.5,0.5 \\
        --out runs/x/soup50.pt
    lightfer eval runs/x/soup50.pt --tta --data cache:crops/fer64a0 --split val --no-latency
"""
from __future__ import annotations

import argparse
import sys

from lightfer.models.shipped import weight_soup
from lightfer.train.checkpoint import save_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", help="checkpoint, checkpoint@live or shipped model name (two or more)")
    ap.add_argument("--weights", help="comma-separated weights, one per member (default: equal); normalised to sum 1")
    ap.add_argument("--out", required=True, help="checkpoint file to write")
    a = ap.parse_args()
    try:
        weights = [float(v) for v in a.weights.split(",")] if a.weights else None
        state = weight_soup(a.members, weights)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    path = save_checkpoint(state, a.out)
    print(f"{path}: {' + '.join(f'{w:.3g} x {m}' for m, w in zip(a.members, state['soup']['weights']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
