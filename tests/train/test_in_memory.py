"""data.in_memory: a split held as tensors yields exactly the batches a DataLoader over it yields."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lightfer.data.dataset import FERDataset
from lightfer.train.config import config_from_dict
from lightfer.train.data import TensorBatches, split_tensors
from lightfer.train.engine import _loader


def _fer(n: int, rgb: bool, soft: bool) -> FERDataset:
    rng = np.random.default_rng(0)
    shape = (n, 12, 10, 3) if rgb else (n, 12, 10)
    votes = rng.random((n, 8)).astype(np.float32)
    return FERDataset(images=rng.integers(0, 256, shape, dtype=np.uint8), labels=rng.integers(0, 8, n),
                      classes=tuple(f"c{i}" for i in range(8)), soft_labels=votes / votes.sum(1, keepdims=True),
                      return_soft=soft, name="toy")


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        assert len(ba) == len(bb)
        for ta, tb in zip(ba, bb):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape and torch.equal(ta, tb)


@pytest.mark.parametrize("rgb,soft,subset", [(False, False, False), (True, True, False), (False, True, True)])
@pytest.mark.parametrize("train", [True, False])
def test_tensor_batches_are_the_loaders_batches(rgb: bool, soft: bool, subset: bool, train: bool) -> None:
    ds = _fer(45, rgb, soft)
    if subset:
        ds = torch.utils.data.Subset(ds, list(range(3, 40)))
    cfg = config_from_dict({"batch_size": 8, "seed": 5})
    for epoch in (0, 3):
        ref = list(_loader(ds, cfg, train=train, epoch=epoch, rank=0, world=1))
        got = _loader(ds, cfg, train=train, epoch=epoch, rank=0, world=1, fields=split_tensors(ds))
        assert isinstance(got, TensorBatches) and len(got) == len(ref)
        _same(ref, list(got))
    fields = split_tensors(ds)
    assert fields[0].dtype == torch.uint8 and fields[0].shape[1] == (3 if rgb else 1)  # a quarter of float32's memory


def test_split_with_a_per_item_transform_is_refused() -> None:
    ds = _fer(4, False, False)
    ds.transform = lambda img: torch.zeros(1, 12, 10)
    with pytest.raises(ValueError, match="toy: data.in_memory needs a dataset without a per-item transform"):
        split_tensors(ds)


def test_drop_last_skips_only_the_training_remainder() -> None:
    ds = _fer(45, False, False)
    cfg = config_from_dict({"batch_size": 8, "seed": 5, "data": {"drop_last": True}})
    seen = []
    for epoch in (0, 1):
        batches = list(_loader(ds, cfg, train=True, epoch=epoch, rank=0, world=1))
        assert [len(b[0]) for b in batches] == [8] * 5  # 45 = 5 x 8 + 5: the 5 are skipped
        ids = torch.cat([b[0] for b in batches])
        assert len(set(ids.tolist())) == 40
        seen.append(set(ids.tolist()))
        got = _loader(ds, cfg, train=True, epoch=epoch, rank=0, world=1, fields=split_tensors(ds))
        assert len(got) == 5
        _same(batches, list(got))
    assert seen[0] != seen[1]  # a different remainder each epoch: no sample is left out for good
    assert [len(b[0]) for b in _loader(ds, cfg, train=False, epoch=0, rank=0, world=1)] == [16, 16, 13]
    small = _fer(5, False, False)  # under one batch: kept, or the epoch would have no step
    assert [len(b[0]) for b in _loader(small, cfg, train=True, epoch=0, rank=0, world=1)] == [5]
    plain = config_from_dict({"batch_size": 8, "seed": 5})
    assert [len(b[0]) for b in _loader(ds, plain, train=True, epoch=0, rank=0, world=1)] == [8] * 5 + [5]
