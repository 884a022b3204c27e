"""Static int8 quantisation of an expression model's ONNX export with ONNX Runtime.

Weights are quantised per output channel to int8 and activations per tensor to uint8, with ranges
calibrated on real model inputs (QDQ format: ONNX Runtime fuses each quantise / dequantise pair into
integer kernels; on CPUs with VNNI — AVX512-VNNI or AVX-VNNI — this runs the ShuffleNetV2 x1.0 about
1.3x faster at batch 1, measured in docs/model_card_history.md, "int8"). Calibration needs representative inputs, so
the quantised file is made once when a model ships and shipped beside its weights
(:func:`lightfer.models.shipped.ship_int8`), never at run time.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightfer.export.onnx import export_onnx

log = logging.getLogger(__name__)

__all__ = ["quantize_int8", "cpu_has_int8_dot"]

_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86 VNNI / AMX, Arm dot product


def cpu_has_int8_dot(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has 8-bit dot-product instructions (x86 VNNI or AMX, Arm ``asimddp``).

    Without them ONNX Runtime's uint8 x int8 kernels may saturate their 16-bit intermediate sums on x86
    (AVX2 / AVX-512 without VNNI) and lose accuracy, and gain little speed; ``precision="auto"`` then runs
    float32. Read from ``cpuinfo`` (Linux); Apple silicon counts as having them; anything else unknown as not.
    ``LIGHTFER_INT8=1`` / ``0`` overrides the answer.
    """
    import platform

    env = os.environ.get("LIGHTFER_INT8")
    if env in ("0", "1"):
        return env == "1"
    try:
        flags = set(Path(cpuinfo).read_text(errors="replace").lower().split())
    except OSError:
        return platform.system() == "Darwin" and platform.machine() == "arm64"
    return any(f in flags for f in _INT8_DOT_FLAGS)


def quantize_int8(model: nn.Module, path: str | Path, calib: np.ndarray, *, batch_size: int = 32,
                  reduce_range: bool = False) -> Path:
    """Export ``model`` to ONNX and write its static int8 (QDQ) quantisation to ``path`` atomically.

    Args:
        model: an expression model with ``pretrained_cfg`` (its input is ``(N, C, S, S)`` float32).
        path: the ``.onnx`` file to write.
        calib: calibration inputs ``(N, C, S, S)`` float32, normalised as the model expects (e.g.
            :func:`lightfer.data.transforms.crops_to_input` of a few hundred training crops).
        batch_size: calibration batch size.
        reduce_range: quantise the weights to 7 bits (ONNX Runtime's ``reduce_range``): the uint8 x int8 kernels of
            x86 CPUs without VNNI (AVX2) then cannot saturate their 16-bit intermediate sums, so the file scores
            the same on every CPU (measured: 8-bit weights lost 14 points of FER2013 accuracy on AVX2, see
            docs/model_card_history.md, "Sessions 23–24"), at the cost of one bit of weight precision.

    Returns the path. The input is named ``input``, the output ``output``; the batch axis is dynamic.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = model.pretrained_cfg
    s = int(cfg.input_size)
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if calib.ndim != 4 or calib.shape[1:] != (cfg.in_chans, s, s) or len(calib) == 0:
        raise ValueError(f"calibration inputs must be (N, {cfg.in_chans}, {s}, {s}) with N > 0, got {calib.shape}")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(calib):
                return None
            x = calib[self.i:self.i + batch_size]
            self.i += batch_size
            return {"input": x}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model.cpu().eval(), fp32, torch.zeros(1, cfg.in_chans, s, s))
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph folding, as ONNX Runtime recommends
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range)
        os.replace(out, path)
    log.info("quantised %s to int8 with %d calibration inputs: %s", getattr(model, "model_name", "model"),
             len(calib), path)
    return path
