#!/usr/bin/env python
"""Copy a crop cache (``lightfer prepare``) into compressed shards of at most ~MAX_MB each.

A lent GPU machine (the ``device`` tool) receives at most 64 MiB per call, working tree included, while a
64 px FER2013 cache is ~125 MB. Sharded, the cache travels over several calls to the same warm machine,
one or two shards per call (``carry``), and is read there as one cache: ``cache:DST`` reads the shards listed
in ``DST/index.json`` in order. Training and evaluation read a sharded cache like the original one.

    python scripts/shard_cache.py crops/fer64a0 crops/fer64a0_shards --max-mb 38
"""
from __future__ import annotations

import argparse
import logging

from lightfer.data.cache import shard_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="crop-cache folder")
    ap.add_argument("dst", help="new folder for the sharded copy")
    ap.add_argument("--max-mb", type=float, default=38.0, help="target size of one shard in MB (default 38)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split, names in shard_cache(a.src, a.dst, a.max_mb).items():
        print(f"{split}: {', '.join(names)}")


if __name__ == "__main__":
    main()
