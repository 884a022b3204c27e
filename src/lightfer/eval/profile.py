"""Model cost: parameters, FLOPs (``torch.utils.flop_counter``) and CPU latency per face.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of a
batch-1 input; it counts 2 FLOPs per multiply-add of matmuls and convolutions (so "FLOPs" here is
twice the "MACs" many papers print) and ignores element-wise ops. Latency is the median over
repeats of a forward after warm-up, batch 1 unless ``batch`` says otherwise (batch 2 is the cost of one face
with flip TTA), with whatever torch thread count the process set (set it once, e.g. from
``lightfer models --threads``); the library never changes it.
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class ModelProfile:
    """Cost of one model at one input size (latencies in ms per forward call of ``batch`` faces)."""

    name: str
    input_size: int
    in_chans: int
    params: int
    flops: int  # per face, 2 x multiply-adds
    torch_ms: float | None = None
    onnx_ms: float | None = None
    onnx_int8_ms: float | None = None  # the shipped int8 quantisation (lightfer.export.quantize), where there is one
    threads: int | None = None
    clock: str = "wall"  # "wall" or "cpu" (thread CPU time), see the module docstring
    batch: int = 1  # faces per timed call (2 = one face with flip TTA); FLOPs stay per face

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return asdict(self)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of ``model(example)``, ``example`` ``(B, C, H, W)``, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return int(counter.get_total_flops())


CLOCKS: tuple[str, ...] = ("wall", "cpu")


def _clock(kind: str, threads: int) -> Callable[[], float]:
    if kind not in CLOCKS:
        raise ValueError(f"unknown clock {kind!r}; choose one of {CLOCKS}")
    if kind == "cpu" and threads != 1:
        raise ValueError(f"clock='cpu' measures one thread; got {threads} threads")
    return time.thread_time if kind == "cpu" else time.perf_counter


def time_torch(
    model: nn.Module, example: torch.Tensor, *, warmup: int = 3, repeats: int = 20, clock: str = "wall"
) -> float:
    """Median milliseconds of ``model(example)`` in eval mode under ``torch.inference_mode``."""
    now = _clock(clock, torch.get_num_threads())
    model = model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(example)
        for _ in range(repeats):
            t0 = now()
            model(example)
            times.append((now() - t0) * 1e3)
    return statistics.median(times)


def time_onnx(
    model: nn.Module, example: torch.Tensor, *, threads: int | None = None, warmup: int = 3, repeats: int = 20,
    clock: str = "wall",
) -> float:
    """Export ``model`` to a temporary ONNX file and return ONNX Runtime's median milliseconds on ``example``."""
    from lightfer.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", example)
        return time_onnx_file(path, example, threads=threads, warmup=warmup, repeats=repeats, clock=clock)


def time_onnx_file(
    path: str | Path, example: torch.Tensor, *, threads: int | None = None, warmup: int = 3, repeats: int = 20,
    clock: str = "wall",
) -> float:
    """ONNX Runtime's median milliseconds for the model file ``path`` on ``example`` ``(B, C, H, W)``."""
    from lightfer.export.onnx import ort_session

    now = _clock(clock, threads if clock == "cpu" else 1)
    sess = ort_session(path, threads)
    feed = {sess.get_inputs()[0].name: example.numpy()}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = now()
        sess.run(None, feed)
        times.append((now() - t0) * 1e3)
    return statistics.median(times)


def profile_module(
    model: nn.Module, name: str, *, latency: bool = True, onnx: bool = False, repeats: int = 20,
    clock: str = "wall", batch: int = 1, int8_onnx: str | Path | None = None,
) -> ModelProfile:
    """Measure a built classifier (with ``pretrained_cfg``: input side and channels) under the label ``name``.

    FLOPs are per face (a batch-1 input); latencies are per call on ``(batch, C, S, S)`` inputs. ``int8_onnx`` is
    an int8 ONNX file of the same architecture to time beside it (timing does not depend on the weights' values).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    from lightfer.models import count_params

    model = model.eval()
    cfg = model.pretrained_cfg
    example = torch.randn(batch, cfg.in_chans, cfg.input_size, cfg.input_size,
                          generator=torch.Generator().manual_seed(0))  # a local generator: the global RNG is left alone
    prof = ModelProfile(
        name=name, input_size=cfg.input_size, in_chans=cfg.in_chans, params=count_params(model),
        flops=count_flops(model, example[:1]), threads=torch.get_num_threads(), clock=clock, batch=batch,
    )
    if latency:
        prof.torch_ms = time_torch(model, example, repeats=repeats, clock=clock)
    if onnx:
        prof.onnx_ms = time_onnx(model, example, threads=torch.get_num_threads(), repeats=repeats, clock=clock)
        if int8_onnx is not None:
            prof.onnx_int8_ms = time_onnx_file(int8_onnx, example, threads=torch.get_num_threads(), repeats=repeats,
                                               clock=clock)
    log.info("profiled %s: %s", name, prof)
    return prof


def profile_model(
    name: str, *, input_size: int | None = None, in_chans: int | None = None, latency: bool = True,
    onnx: bool = False, repeats: int = 20, clock: str = "wall", model_kwargs: dict[str, Any] | None = None,
    batch: int = 1,
) -> ModelProfile:
    """Build the registered model ``name`` and measure its cost at its default (or the given) input.

    FLOPs are per face (a batch-1 input); latencies are per call on ``(batch, C, S, S)`` inputs; a shipped int8
    quantisation of the model is timed too under ``onnx``. Train-time branches (``model_kwargs={"rep": N}``) are
    folded first, so the network measured is the one served.
    """
    from lightfer.models import create_model
    from lightfer.models.rep import reparameterize

    kw: dict[str, Any] = dict(model_kwargs or {})
    if input_size is not None:
        kw["input_size"] = input_size
    if in_chans is not None:
        kw["in_chans"] = in_chans
    model = create_model(name, **kw).eval()
    reparameterize(model)
    int8 = model.pretrained_cfg.int8_onnx
    return profile_module(model, name, latency=latency, onnx=onnx, repeats=repeats, clock=clock, batch=batch,
                          int8_onnx=Path(int8) if int8 else None)


def profile_checkpoint(
    path: str | Path, *, latency: bool = True, onnx: bool = False, repeats: int = 20, clock: str = "wall",
    batch: int = 1,
) -> ModelProfile:
    """Measure the classifier of a ``lightfer train`` checkpoint as it was trained (architecture options such as
    an SE head or a Neural Resizer, its input side), labelled by the file's path; no int8 timing.

    Raises :class:`lightfer.train.checkpoint.CheckpointError` (naming the file) for a file that is not one."""
    from lightfer.train.checkpoint import load_model_from_checkpoint

    model = load_model_from_checkpoint(path)
    return profile_module(model, str(path), latency=latency, onnx=onnx, repeats=repeats, clock=clock, batch=batch)
