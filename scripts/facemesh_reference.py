"""Write the known answers of tests/models/test_facemesh.py: the TFLite interpreter's own outputs of MediaPipe's
face-landmark network (468 points and the face logit) for two 192 px inputs.

Run with Google's interpreter, outside the project's environment (it is not a lightfer dependency):
    python -m venv /tmp/litertenv && /tmp/litertenv/bin/pip install ai-edge-litert==2.3.0 scikit-image numpy
    /tmp/litertenv/bin/python scripts/facemesh_reference.py ~/.cache/lightfer/mediapipe_face_landmark.tflite \
        tests/models/fixtures/facemesh_reference.json
The test imports `chips()` from this file: seeded noise, and the astronaut's face from scikit-image (public domain)
cut and resized by index arithmetic, so no image codec or resampler can make the inputs differ. Inputs are RGB
scaled to [0, 1], the range the port's model config uses.
"""
import json
import sys

import numpy as np


def chips() -> dict[str, np.ndarray]:
    """``{name: (192, 192, 3) uint8 RGB}``."""
    from skimage import data

    noise = np.random.default_rng(0).integers(0, 256, size=(192, 192, 3), dtype=np.uint8)
    face = data.astronaut()[10:230, 120:340]  # 220 x 220 around her face, with a margin as MediaPipe crops
    idx = np.arange(192) * face.shape[0] // 192
    return {"noise": noise, "astronaut": np.ascontiguousarray(face[idx][:, idx])}


def main() -> None:
    from ai_edge_litert import __version__ as litert_version
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(sys.argv[1])
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = {o["name"]: o["index"] for o in it.get_output_details()}
    result: dict = {"ai_edge_litert": litert_version, "points": {}, "face_logit": {}}
    for name, chip in chips().items():
        it.set_tensor(inp, (chip.astype(np.float32) / 255.0)[None])
        it.invoke()
        result["points"][name] = [round(float(v), 4) for v in it.get_tensor(outs["conv2d_21"]).reshape(-1)]
        result["face_logit"][name] = float(it.get_tensor(outs["conv2d_31"]).reshape(-1)[0])
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
