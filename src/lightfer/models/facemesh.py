"""MediaPipe Face Mesh's landmark network as a small face-pretrained backbone.

The network (Google, MediaPipe 0.10, Apache-2.0; Kartynnik et al., "Real-time Facial Surface Geometry from
Monocular Video on Mobile GPUs", 2019) regresses 468 3-D face-mesh points and a face-presence score from a
192 x 192 RGB face crop. It was trained on tens of thousands of faces to follow the mouth, eyes and brows, which is
the geometry an expression lives in, and it is small: 0.60M parameters in all, 0.17M in the part kept here.
Its weights reach this project from PyPI only: ``face_landmark.tflite`` ships in the ``mediapipe==0.10.21`` wheel,
which ``lightfer fetch`` downloads with ``pip download --no-deps`` (never installs), checks and unpacks
(``lightfer.assets``); :func:`read_face_landmark_tflite` reads the file with the ``tflite`` flatbuffer schema.

Architecture, read from the file (input side first; 192 px sides in brackets)::

    stem:   conv 16 3x3/2 - PReLU                                              [96]
    trunk:  2 x block(16), block(32, /2), 2 x block(32), block(64, /2), 2 x block(64),
            block(128, /2), 2 x block(128), block(128, /2), 2 x block(128)      [6]
    mesh:   block(128, /2), 2 x block(128)                                      [3]  <- the expression features
            conv 32 1x1 - PReLU, block(32), conv 1404 3x3 (no padding)          [1]  468 x (x, y, z) in pixels
    flag:   block(128, /2) from the trunk, conv 32 1x1 - PReLU, block(32), conv 1 3x3 (no padding): the face logit

    block(C, /s) = PReLU(skip + conv C 1x1(depthwise 3x3/s(x))),
    skip = x, or for /2 max_pool 2x2/2(x) zero-padded from its channels to C (BlazeFace's block).

Convolutions pad as TensorFlow's ``SAME`` does: one pixel all round at stride 1 (the convolution's own padding)
and, at stride 2, the extra row and column at the end on an even side (:func:`tf_same_pad`), so the port matches the TFLite interpreter (``tests/models/
test_facemesh.py`` holds its outputs as a fixture). The shortcut's max-pool rounds up (``ceil_mode``) so that odd
sides (112 px reaches a 7 x 7 map) still add up; on even sides this is TensorFlow's pooling exactly. The network has
no normalisation layers. Inputs are RGB in [0, 1] (the TFLite interpreter scores the astronaut's face at a logit of
26.5 there, 22.7 with [-1, 1]); for one (gray) channel the stem's RGB weights are summed, which is
exact for a gray image. For expression, the mesh branch's 128-channel map is pooled into a new classifier; the point
and face-score heads are dropped (:class:`FaceMeshLandmarker` keeps them, to check the port).
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

WEIGHTS_ASSET = "mediapipe_face_landmark.tflite"
NUM_POINTS = 468
# (in, out, stride) of the shared trunk's blocks, then the mesh branch's; TF names follow the file's numbering
TRUNK: tuple[tuple[int, int, int], ...] = (
    (16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1),
    (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1), (128, 128, 1),
)
MESH: tuple[tuple[int, int, int], ...] = ((128, 128, 2), (128, 128, 1), (128, 128, 1))


class FaceMeshFormatError(ValueError):
    """The file is not the MediaPipe face-landmark model this port was written for."""


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` as TensorFlow's ``SAME`` does for a ``kernel`` x ``kernel`` window at ``stride``:
    the output side is ``ceil(side / stride)`` and an odd total padding puts the extra pixel at the end."""
    pads: list[int] = []
    for side in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        out = -(-int(side) // stride)
        total = max((out - 1) * stride + kernel - int(side), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class FaceMeshBlock(nn.Module):
    """``PReLU(skip + pw(dw(x)))``: ``(B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if out_chs < in_chs or stride not in (1, 2):
            raise ValueError(f"block {in_chs}->{out_chs} /{stride}: channels may only grow, stride is 1 or 2")
        self.stride = stride
        self.extra = out_chs - in_chs
        # stride 1: TF's SAME is a symmetric 1-pixel pad, done by the convolution itself (one ONNX op fewer);
        # stride 2: SAME pads the end only on even sides, done by tf_same_pad in forward
        self.dw = nn.Conv2d(in_chs, in_chs, 3, stride, 1 if stride == 1 else 0, groups=in_chs)
        self.pw = nn.Conv2d(in_chs, out_chs, 1)
        self.act = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``."""
        y = self.pw(self.dw(x if self.stride == 1 else tf_same_pad(x, 3, 2)))
        skip = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.stride == 2 else x
        if self.extra:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra))
        return self.act(skip + y)


class FaceMeshNet(nn.Module):
    """Face Mesh's trunk and mesh blocks with a classifier on the pooled 128-d feature: ``(B, C, S, S) -> (B, K)``.

    Args:
        num_classes: outputs of the new head (0: pooled features).
        in_chans: 3 (RGB, as MediaPipe) or 1 (gray; the stem's weights are summed over RGB when loaded).
        drop_rate: dropout before the classifier.
        head: ``"linear"`` or ``"se"``.
        pretrained_backbone: load MediaPipe's weights into the trunk (``lightfer fetch`` provides the file).
        resample_to: resize every input to this side first (bilinear, as the trainer's resize), so that a model
            trained on 64 px crops resized to 128 is served 64 px crops like the ShuffleNets (the same pixels).
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.0, head: str = "linear",
                 pretrained_backbone: bool = False, resample_to: int | None = None) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"face mesh takes 1 or 3 input channels, not {in_chans}")
        self.in_chans = in_chans
        self.resample_to = resample_to
        self.stem_conv = nn.Conv2d(in_chans, 16, 3, 2, 0)
        self.stem_act = nn.PReLU(16)
        self.blocks = nn.Sequential(*(FaceMeshBlock(*b) for b in TRUNK))
        self.mesh = nn.Sequential(*(FaceMeshBlock(*b) for b in MESH))
        self.num_features = MESH[-1][1]
        # the trunk has no norms and its pooled features sit far from zero (mean ~4, spread ~0.2 across
        # images): a batch norm in front of the new classifier puts them on the head's scale
        self.head_norm = nn.BatchNorm2d(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, kind=head, drop_rate=drop_rate)
        if pretrained_backbone:
            from lightfer.assets import asset_path

            load_facemesh_backbone(self, asset_path(WEIGHTS_ASSET))

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> the shared trunk's map ``(B, 128, H/32, W/32)`` (6 x 6 at 192 px)."""
        if self.resample_to:
            x = resize_square(x, self.resample_to)
        x = self.stem_act(self.stem_conv(tf_same_pad(x, 3, 2)))
        return self.blocks(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> the mesh branch's map ``(B, 128, H/64, W/64)`` (3 x 3 at 192 px)."""
        return self.mesh(self.forward_trunk(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Maps ``(B, 128, h, w)`` -> logits ``(B, K)`` (normalised and pooled ``(B, 128)`` with ``pre_logits``)."""
        return self.head(self.head_norm(x), pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


class FaceMeshLandmarker(nn.Module):
    """The whole MediaPipe network, to check the port: RGB ``(B, 3, 192, 192)`` in [0, 1] ->
    points ``(B, 468, 3)`` (x, y in input pixels, z relative) and face logits ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = FaceMeshNet(num_classes=0, in_chans=3)
        self.mesh_proj = nn.Conv2d(128, 32, 1)
        self.mesh_proj_act = nn.PReLU(32)
        self.mesh_tail = FaceMeshBlock(32, 32)
        self.mesh_out = nn.Conv2d(32, NUM_POINTS * 3, 3)
        self.flag_block = FaceMeshBlock(128, 128, 2)
        self.flag_proj = nn.Conv2d(128, 32, 1)
        self.flag_proj_act = nn.PReLU(32)
        self.flag_tail = FaceMeshBlock(32, 32)
        self.flag_out = nn.Conv2d(32, 1, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, 192, 192)`` -> points ``(B, 468, 3)``, face logits ``(B,)``."""
        shared = self.net.forward_trunk(x)
        m = self.mesh_tail(self.mesh_proj_act(self.mesh_proj(self.net.mesh(shared))))
        points = self.mesh_out(m).flatten(1).view(-1, NUM_POINTS, 3)
        f = self.flag_tail(self.flag_proj_act(self.flag_proj(self.flag_block(shared))))
        return points, self.flag_out(f).flatten(1)[:, 0]


# --------------------------------------------------------------------------- reading the TFLite file


def read_face_landmark_tflite(path: str | Path) -> dict[str, np.ndarray]:
    """Constant tensors of MediaPipe's ``face_landmark.tflite`` by TensorFlow name (``conv2d_1/Kernel``, ...),
    as float32 arrays in TensorFlow's layouts (float16 weights are widened)."""
    try:
        import tflite
    except ImportError as e:  # a declared dependency; only missing in a hand-made environment
        raise ImportError("reading the face-mesh weights needs the 'tflite' package (pip install tflite)") from e
    path = Path(path)
    buf = path.read_bytes()
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0) if model.SubgraphsLength() else None
    except Exception as e:  # noqa: BLE001 - flatbuffers raises assorted errors on a foreign file
        raise FaceMeshFormatError(f"{path}: not a TFLite model ({e})") from e
    if graph is None:
        raise FaceMeshFormatError(f"{path}: not a TFLite model (no subgraph)")
    dtypes = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32,
              tflite.TensorType.INT32: np.int32}
    out: dict[str, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0 or t.Type() not in dtypes:
            continue
        arr = np.frombuffer(data.tobytes(), dtype=dtypes[t.Type()]).reshape(t.ShapeAsNumpy())
        out[t.Name().decode()] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    if "conv2d_1/Kernel" not in out or out["conv2d_1/Kernel"].shape != (16, 3, 3, 3):
        raise FaceMeshFormatError(f"{path}: no 16x3x3x3 'conv2d_1/Kernel': not MediaPipe's face-landmark model")
    return out


def _conv(params: dict[str, np.ndarray], name: str, depthwise: bool = False) -> dict[str, torch.Tensor]:
    k = params[f"{name}/Kernel"]  # conv: (O, H, W, I); depthwise: (1, H, W, C)
    w = k.transpose(3, 0, 1, 2) if depthwise else k.transpose(0, 3, 1, 2)
    return {"weight": torch.from_numpy(np.ascontiguousarray(w)), "bias": torch.from_numpy(params[f"{name}/Bias"])}


def _prelu(params: dict[str, np.ndarray], index: int) -> dict[str, torch.Tensor]:
    return {"weight": torch.from_numpy(params[f"p_re_lu_{index}/Alpha"].reshape(-1).copy())}


def _under(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _block_state(params: dict[str, np.ndarray], prefix: str, dw: int, pw: int, act: int) -> dict[str, torch.Tensor]:
    return {**_under(f"{prefix}.dw", _conv(params, f"depthwise_conv2d_{dw}", True)),
            **_under(f"{prefix}.pw", _conv(params, f"conv2d_{pw}")), **_under(f"{prefix}.act", _prelu(params, act))}


def facemesh_state(params: dict[str, np.ndarray], whole: bool = False) -> dict[str, torch.Tensor]:
    """Map the file's tensors to :class:`FaceMeshNet`'s names (RGB stem), or with ``whole`` to
    :class:`FaceMeshLandmarker`'s (every head)."""
    pre = "net." if whole else ""
    state = {**_under(f"{pre}stem_conv", _conv(params, "conv2d_1")), **_under(f"{pre}stem_act", _prelu(params, 1))}
    for i in range(len(TRUNK) + len(MESH)):  # block i: depthwise_conv2d_{i+1}, conv2d_{i+2}, p_re_lu_{i+2}
        where = f"{pre}blocks.{i}" if i < len(TRUNK) else f"{pre}mesh.{i - len(TRUNK)}"
        state.update(_block_state(params, where, i + 1, i + 2, i + 2))
    if whole:
        state.update({**_under("mesh_proj", _conv(params, "conv2d_19")), **_under("mesh_proj_act", _prelu(params, 19)),
                      **_block_state(params, "mesh_tail", 18, 20, 20), **_under("mesh_out", _conv(params, "conv2d_21")),
                      **_block_state(params, "flag_block", 23, 28, 26),
                      **_under("flag_proj", _conv(params, "conv2d_29")), **_under("flag_proj_act", _prelu(params, 27)),
                      **_block_state(params, "flag_tail", 24, 30, 28), **_under("flag_out", _conv(params, "conv2d_31"))})
    return state


def load_facemesh_backbone(model: FaceMeshNet, path: str | Path) -> None:
    """Load MediaPipe's trunk and mesh blocks from ``face_landmark.tflite`` into ``model`` (its head is kept)."""
    state = facemesh_state(read_face_landmark_tflite(path))
    if model.in_chans == 1:  # a gray pixel g replicated into RGB: sum_c w_c * g
        state["stem_conv.weight"] = state["stem_conv.weight"].sum(1, keepdim=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("head.", "head_norm.")) for k in missing):
        raise FaceMeshFormatError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    log.info("loaded MediaPipe's face-mesh trunk from %s", path)


def load_facemesh_landmarker(path: str | Path) -> FaceMeshLandmarker:
    """The whole MediaPipe network (points and face score) from ``face_landmark.tflite``, in eval mode."""
    model = FaceMeshLandmarker()
    missing, unexpected = model.load_state_dict(facemesh_state(read_face_landmark_tflite(path), whole=True),
                                                strict=False)
    if unexpected or any(not k.startswith("net.head") for k in missing):  # the classifier's parts are unused here
        raise FaceMeshFormatError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    return model.eval()


@register_model(PretrainedCfg(
    input_size=128, in_chans=1, mean=(0.0,), std=(1.0,), crop_margin=0.0,
    weights="mediapipe==0.10.21 (PyPI wheel): modules/face_landmark/face_landmark.tflite, trunk and mesh blocks "
            "(pretrained_backbone=True)",
    license="Apache-2.0",
    description="MediaPipe Face Mesh's landmark trunk (face-pretrained, Apache-2.0) + new head; any input side"))
def facemesh_face(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> FaceMeshNet:
    """MediaPipe Face Mesh's trunk and mesh blocks (0.17M parameters) with a new expression head.

    ``pretrained_backbone=True`` loads the face-mesh weights (train from them); MediaPipe feeds 192 px crops with a
    margin around the face, the default here is 128 px (tight 64 px aligned crops, upsampled: the face about as
    large as in MediaPipe's crop), 28 MFLOPs (`lightfer models facemesh_face`; 16 at 96 px).
    """
    kwargs.pop("img_size", None)  # fully convolutional: any side works
    return FaceMeshNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
