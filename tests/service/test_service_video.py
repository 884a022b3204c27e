"""POST /v1/analyze/video over the fake analyzer: timeline, per-person summary, and the clip limits."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_clip(path: Path, frames: int = 12, fps: float = 10.0, size: tuple[int, int] = (160, 120)) -> bytes:
    """A gray mp4 clip (the fake analyzer finds two faces above its default threshold in every frame)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 120 + i % 3, np.uint8))
    writer.release()
    return path.read_bytes()


@pytest.fixture()
def clip(tmp_path) -> bytes:
    return write_clip(tmp_path / "clip.mp4")


def post_video(client, data: bytes, query: str = "", name: str = "clip.mp4", ctype: str = "video/mp4"):
    return client.post(f"/v1/analyze/video{query}", files={"file": (name, data, ctype)})


def test_timeline_and_people(make_client, clip):
    client, built = make_client()
    r = post_video(client, clip)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "clip.mp4" and body["frame_count"] == 12 and body["stride"] == 1
    assert body["fps"] == pytest.approx(10.0) and body["duration_s"] == pytest.approx(1.2)
    timeline = body["timeline"]
    assert body["frames_analysed"] == len(timeline) == 12
    assert [t["frame_index"] for t in timeline] == list(range(12))
    assert all(len(t["faces"]) == 2 for t in timeline)
    ids = {f["track_id"] for t in timeline for f in t["faces"]}
    assert len(ids) == 2  # two still faces keep their identities over the clip
    people = body["people"]
    assert sorted(p["track_id"] for p in people) == sorted(ids)
    assert all(p["frames"] == 12 and p["dominant_expression"] == "happy" for p in people)


def test_stride_fps_and_frame_cap(make_client, clip):
    client, _ = make_client(max_video_frames=5)
    body = post_video(client, clip, "?stride=2").json()
    assert body["stride"] == 3 and body["frames_analysed"] == 4  # raised so that <= 5 frames are analysed
    body = post_video(client, clip, "?fps=2.5").json()
    assert body["sample_fps"] == 2.5 and [t["frame_index"] for t in body["timeline"]] == [0, 4, 8]
    body = post_video(client, clip, "?fps=100").json()  # would exceed the budget: the stride takes over
    assert body["sample_fps"] is None and body["stride"] == 3 and body["frames_analysed"] == 4


def test_thresholds_apply_to_video(make_client, clip):
    client, built = make_client()
    body = post_video(client, clip, "?score_threshold=0.7").json()
    assert all(len(t["faces"]) == 1 for t in body["timeline"])
    assert built["fake"].detector.cfg.score_threshold == 0.5


def test_clip_too_long(make_client, clip):
    client, built = make_client(max_video_seconds=0.5)
    r = post_video(client, clip)
    assert r.status_code == 413 and "1.2 s" in r.json()["detail"] and "0.5 s" in r.json()["detail"]
    assert built["fake"].calls == 0


def test_video_too_large(make_client, clip):
    client, _ = make_client(max_video_bytes=len(clip) - 1)
    r = post_video(client, clip)
    assert r.status_code == 413 and "too large" in r.json()["detail"]


@pytest.mark.parametrize("data, ctype, status, word", [
    (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500, "video/mp4", 400, "could not"),  # an mp4 header, no content
    (b"GIF89a" + b"\x00" * 100, "video/mp4", 415, "not a video"),
    (b"hello", "text/plain", 415, "text/plain"),
    (b"", "video/mp4", 400, "empty"),
])
def test_bad_clips(make_client, data, ctype, status, word):
    client, built = make_client()
    r = post_video(client, data, ctype=ctype)
    assert r.status_code == status, r.text
    assert word in r.json()["detail"]
    assert built["fake"].calls == 0


def test_raw_video_body_and_unsupported_content_type(make_client, clip):
    client, _ = make_client(max_video_seconds=0.5)
    r = client.post("/v1/analyze/video", content=clip, headers={"content-type": "video/mp4"})
    assert r.status_code == 413  # read, probed and refused for its length
    r = client.post("/v1/analyze/video", content=clip, headers={"content-type": "application/json"})
    assert r.status_code == 415


def test_video_timeout(make_client, clip):
    client, _ = make_client(delay=0.2, video_timeout_s=0.3)
    r = post_video(client, clip)
    assert r.status_code == 504 and "timeout" in r.json()["detail"]
    assert client.get("/health").status_code == 200


def test_unknown_model_is_404_before_the_upload_is_read(make_client, clip):
    client, _ = make_client()
    r = post_video(client, clip, "?model=nope")
    assert r.status_code == 404
