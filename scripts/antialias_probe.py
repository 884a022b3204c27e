#!/usr/bin/env python
"""How much the anti-aliased crop of large faces matters: FER2013 faces made large and noisy, cut both ways.

FER2013 has no high-resolution faces, so this builds labelled ones: each 48 px test image is enlarged
``--upscale`` times (bicubic; a 384 px face at 8x) and given pixel-level Gaussian noise of standard
deviation ``--noise`` grey levels, a stand-in for the sensor noise and fine texture of a real large face.
The face is then cut from the enlarged image at the landmarks ``lightfer prepare`` found (scaled up), with
the plain bilinear warp and with :func:`lightfer.alignment.warp_crop`'s anti-aliasing, and classified by
``--model`` (no flip TTA); the script prints accuracy, UAR and the paired exact McNemar test per noise level.
The same faces without enlargement (the prepare crops themselves) give the reference accuracy.
With ``--compare OTHER`` a second model (same crop size, margin and mode) classifies the very same crops, and
the script adds the paired test of ``--model`` against it for the reference and the anti-aliased crops.

    python scripts/antialias_probe.py --data ../shared/data/fer2013/fer2013.csv.gz --cache crops/fer64a0 \
        --split test --upscale 8 --noise 0,8,16
    python scripts/antialias_probe.py --model runs/x/best.pt --no-ema --compare shufflenet_v2_x0_5_fer2013 \
        --upscale 2 --noise 0,16
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from lightfer.alignment import crop_face
from lightfer.data import build_dataset
from lightfer.data.cache import read_cache, read_cache_arrays, read_index
from lightfer.defaults import DEFAULT_MODEL
from lightfer.eval.evaluate import align_labels, load_classifier, predict_probs
from lightfer.eval.metrics import confusion_matrix, metrics_from_confusion, paired_comparison


def source_landmarks(cached: np.ndarray, upscale: float, k: float) -> np.ndarray:
    """Landmarks ``(N, 5, 2)`` as stored by ``lightfer prepare`` (px of the detection image, enlarged ``k`` times,
    divided by ``k``) -> pixel centres of the source image enlarged ``upscale`` times by ``cv2.resize``."""
    centre = (cached * k + 0.5) / k - 0.5  # cv2.resize: a source pixel centre p sits at (p + 0.5) * k - 0.5
    return (centre + 0.5) * upscale - 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fer2013/fer2013.csv.gz", help="FER2013 csv(.gz)")
    ap.add_argument("--cache", default="crops/fer64a0", help="lightfer prepare output (landmarks, labels)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or training checkpoint")
    ap.add_argument("--no-ema", action="store_true", help="a checkpoint's live weights instead of their EMA")
    ap.add_argument("--compare", help="a second model or checkpoint, scored on the same crops (paired test)")
    ap.add_argument("--compare-no-ema", action="store_true", help="the --compare checkpoint's live weights")
    ap.add_argument("--upscale", type=float, default=8.0)
    ap.add_argument("--noise", default="0,8,16", help="comma-separated noise standard deviations, grey levels")
    ap.add_argument("--limit", type=int, default=0, help="first N faces only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_classifier(a.model, use_ema=not a.no_ema)
    cfg = model.pretrained_cfg
    other = load_classifier(a.compare, use_ema=not a.compare_no_ema) if a.compare else None
    if other is not None:
        oc = other.pretrained_cfg
        if (oc.input_size, oc.crop_margin, oc.crop_mode, tuple(oc.classes)) != (
                cfg.input_size, cfg.crop_margin, cfg.crop_mode, tuple(cfg.classes)):
            raise SystemExit(f"--compare {a.compare}: its crops or classes differ from {a.model}'s")
    cache = align_labels(read_cache(a.cache, a.split), tuple(cfg.classes))
    z = read_cache_arrays(a.cache, a.split)
    found = z["face_found"]
    raw = build_dataset(f"fer2013:{a.data}", a.split)
    if len(raw.images) != len(found):
        raise SystemExit(f"{a.data} {a.split}: {len(raw.images)} images, but {a.cache} has {len(found)}")
    keep = np.flatnonzero(found)
    if a.limit:
        keep = keep[: a.limit]
    labels = cache.labels[keep]
    marks = source_landmarks(z["landmarks"][keep].astype(np.float64), a.upscale, float(read_index(a.cache)["upscale"]))

    def score(name: str, crops: np.ndarray) -> np.ndarray:
        pred = predict_probs(model, crops).argmax(1)
        m = metrics_from_confusion(confusion_matrix(labels, pred, len(cfg.classes)))
        print(f"{name:<34} acc {100 * m['accuracy']:6.2f}%  UAR {100 * m['uar']:6.2f}%")
        ok = pred == labels
        if other is not None:
            ok_other = predict_probs(other, crops).argmax(1) == labels
            c = paired_comparison(ok, ok_other)
            print(f"{'':<34} vs --compare ({100 * ok_other.mean():.2f}%): {100 * c['diff']:+.2f} points "
                  f"({c['only_a']} vs {c['only_b']} faces, exact McNemar p = {c['p_mcnemar']:.2g})")
        return ok

    print(f"{a.model} on {len(keep)} {a.split} faces; enlarged x{a.upscale:g} (face ~{48 * a.upscale:.0f} px), "
          f"crop {cfg.input_size} px, no TTA")
    score("prepare crops (reference)", cache.images[keep])
    rng = np.random.default_rng(a.seed)
    for sigma in (float(s) for s in a.noise.split(",")):
        plain, smooth = [], []
        for j, i in enumerate(keep):
            big = cv2.resize(raw.images[i], None, fx=a.upscale, fy=a.upscale, interpolation=cv2.INTER_CUBIC)
            if sigma > 0:
                big = np.clip(big + rng.normal(0.0, sigma, big.shape), 0, 255).astype(np.uint8)
            rgb = np.repeat(big[..., None], 3, axis=-1)
            for out, aa in ((plain, False), (smooth, True)):
                crop = crop_face(rgb, np.zeros(4), marks[j], cfg.input_size, cfg.crop_margin, "align", antialias=aa)
                out.append(crop[..., 0])
        ok_plain = score(f"noise {sigma:g}: plain bilinear warp", np.stack(plain))
        ok_smooth = score(f"noise {sigma:g}: anti-aliased warp", np.stack(smooth))
        c = paired_comparison(ok_smooth, ok_plain)
        print(f"{'':<34} anti-aliased - plain {100 * c['diff']:+.2f} points "
              f"({c['only_a']} vs {c['only_b']} faces, exact McNemar p = {c['p_mcnemar']:.2g})")


if __name__ == "__main__":
    main()
