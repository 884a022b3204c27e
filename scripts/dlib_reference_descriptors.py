"""Write the known answers of tests/models/test_dlib_resnet.py: dlib's own 128-d face descriptors of two chips.

Run with the real dlib, outside the project's environment (dlib is not a lightfer dependency):
    python -m venv /tmp/dlibenv && /tmp/dlibenv/bin/pip install dlib-bin==20.0.1 scikit-image numpy
    /tmp/dlibenv/bin/python scripts/dlib_reference_descriptors.py ~/.cache/lightfer/dlib_face_recognition_resnet_model_v1.dat \
        tests/models/fixtures/dlib_descriptors.json
The test imports `chips()` from this file: seeded noise, and the
astronaut's face from scikit-image (public domain) cut and resized by index arithmetic, so no image codec or
resampler can make the inputs differ.
"""
import json
import sys

import numpy as np


def chips() -> dict[str, np.ndarray]:
    """``{name: (150, 150, 3) uint8 RGB}``."""
    from skimage import data

    noise = np.random.default_rng(0).integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    face = data.astronaut()[20:250, 130:360]  # 230 x 230 around her face
    idx = np.arange(150) * face.shape[0] // 150
    return {"noise": noise, "astronaut": np.ascontiguousarray(face[idx][:, idx])}


def main() -> None:
    import dlib

    net = dlib.face_recognition_model_v1(sys.argv[1])
    out = {"dlib": dlib.__version__,
           "descriptors": {k: list(map(float, net.compute_face_descriptor(v))) for k, v in chips().items()}}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
