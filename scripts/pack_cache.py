#!/usr/bin/env python
"""Pack a crop cache (``lightfer prepare``) into its source images and detections, or unpack it again.

A lent GPU machine (the ``device`` tool) receives at most 64 MiB per call, working tree included. Packed, the
FER2013 training and PublicTest crops travel in one call: ``pack`` stores each cached face's *source* image
(lossless WebP) with the stored detections, and ``unpack`` cuts the crops again there, checked bit for bit
against the originals (SHA-256). Needs the source dataset (the index's ``source`` spec, or ``--source``) to pack.

    python scripts/pack_cache.py pack crops/fer64a0 crops/fer64a0_pack --splits train,val --limit val=1000
    python scripts/pack_cache.py unpack crops/fer64a0_pack crops/fer64a0
"""
from __future__ import annotations

import argparse
import logging

from lightfer.data.cache import pack_cache, unpack_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("src", help="crop-cache folder (pack) or packed folder (unpack)")
    ap.add_argument("dst", help="new folder")
    ap.add_argument("--splits", help="comma-separated splits to pack (default: all)")
    ap.add_argument("--limit", action="append", default=[], metavar="SPLIT=N",
                    help="pack only the first N samples of SPLIT (repeat), e.g. val=1000")
    ap.add_argument("--lenient", action="store_true",
                    help="unpack: keep crops that differ from the packed ones (a warning) instead of failing")
    ap.add_argument("--source", help="dataset spec of the source images (default: the index's source)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.action == "pack":
        limit = {k: int(v) for k, v in (x.split("=", 1) for x in a.limit)}
        splits = a.splits.split(",") if a.splits else None
        for split, mb in pack_cache(a.src, a.dst, splits, a.source, limit).items():
            print(f"{split}: {mb:.1f} MB")
    else:
        for split, n in unpack_cache(a.src, a.dst, strict=not a.lenient).items():
            print(f"{split}: {n} crops")


if __name__ == "__main__":
    main()
