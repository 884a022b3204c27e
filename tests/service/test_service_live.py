"""A real ``lightfer serve`` in a child process: the same JSON as the Python API, and a tiny load run."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest


def test_answer_matches_the_analyzer(live_server, astronaut_jpeg):
    from lightfer.pipeline import Analyzer

    with astronaut_jpeg.open("rb") as f:
        r = httpx.post(f"{live_server}/v1/analyze", files={"file": ("astronaut.jpg", f, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    served = r.json()
    direct = Analyzer()(str(astronaut_jpeg)).to_dict()
    assert served["source"] == "astronaut.jpg"
    for key in ("width", "height", "faces", "error"):
        assert served[key] == direct[key], key
    assert len(served["faces"]) == 1 and served["faces"][0]["label"] == "happy"
    assert set(served["timings_ms"]) == set(direct["timings_ms"])


def test_live_limits_and_health(live_server):
    health = httpx.get(f"{live_server}/health").json()
    assert health["status"] == "ok" and health["loaded_models"] == [health["default_model"]]
    # over a real socket, a declared body over the limit (64 KiB off the upload paths) is refused unread
    r = httpx.post(f"{live_server}/health", content=b"x" * 100_000, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = httpx.post(f"{live_server}/v1/analyze", content=b"not an image", headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_tiny_load_run_has_no_errors(live_server, astronaut_jpeg, tmp_path):
    from lightfer.cli import main

    out = tmp_path / "load.json"
    code = main(["serve", "--bench", "--url", live_server, "--requests", "24", "--concurrency", "4", "--warmup", "2",
                 "--image", str(astronaut_jpeg), "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["errors"] == 0 and report["ok"] == 24
    assert report["faces"] == 1 and report["status_counts"] == {"200": 24}
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]


def test_load_run_counts_failures(live_server):
    from lightfer.service.load_test import run_load

    report = run_load(live_server, b"not an image", requests=6, concurrency=3)
    assert report.errors == 6 and report.ok == 0 and report.status_counts == {"415": 6}
    with pytest.raises(ValueError):
        run_load(live_server, b"", requests=0)


def test_live_video_clip(live_server, astronaut, tmp_path):
    import cv2

    path = tmp_path / "astronaut.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    small = cv2.resize(cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR), (256, 256))
    for i in range(8):
        writer.write(np.roll(small, 2 * i, axis=1))  # the face moves a little to the right
    writer.release()
    with path.open("rb") as f:
        r = httpx.post(f"{live_server}/v1/analyze/video", files={"file": ("astronaut.mp4", f, "video/mp4")},
                       timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["frames_analysed"] == 8 and all(len(t["faces"]) == 1 for t in body["timeline"])
    assert len({t["faces"][0]["track_id"] for t in body["timeline"]}) == 1
    xs = [t["faces"][0]["box"][0] for t in body["timeline"]]
    assert xs[-1] - xs[0] > 5  # the boxes follow the moving face
    (person,) = body["people"]
    assert person["frames"] == 8 and person["dominant_expression"] == "happy"
