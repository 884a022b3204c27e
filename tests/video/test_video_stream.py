"""Frame sources and Analyzer.stream on synthetic videos made of real face photos."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_helpers import TILE, corrupt_avi_frame, mp4_stts, set_mp4_frame_durations

from lightfer.eval.video_bench import Actor, write_clip
from lightfer.video import FrameSampler, VideoFrame, VideoReadError, VideoSource, is_video_source

SIZE = (320, 240)


def plain_clip(path: Path, n: int, fps: float = 25.0, size: tuple[int, int] = (64, 48)) -> Path:
    """Frames whose mean brightness encodes their index ((2 * i) % 250)."""
    code = "MJPG" if path.suffix == ".avi" else "mp4v"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (2 * i) % 250, np.uint8))
    w.release()
    return path


def test_is_video_source() -> None:
    assert is_video_source("clip.MP4") and is_video_source(Path("a/b.mkv")) and is_video_source(0)
    assert is_video_source("rtsp://10.0.0.2:554/live") and is_video_source("https://x.org/live.m3u8")
    assert is_video_source("http://cam.local/video")
    assert not is_video_source("photo.jpg") and not is_video_source("https://x.org/face.png?s=1")
    assert not is_video_source("folder/")


def test_unreadable_sources_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="missing.mp4"):
        VideoSource(tmp_path / "missing.mp4")
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(VideoReadError, match="notavideo.mp4"):
        VideoSource(bad)


def test_corrupt_frame_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = plain_clip(tmp_path / "c.avi", 30)
    corrupt_avi_frame(clip, 10)
    with caplog.at_level(logging.WARNING, logger="lightfer.video"):
        with VideoSource(clip) as src:
            frames = [(f.index, f.timestamp, float(f.image.mean())) for f in src]
            assert src.skipped == 1
    assert [i for i, _, _ in frames] == [i for i in range(30) if i != 10]
    assert any("undecodable" in r.message and "frame 11" in r.message for r in caplog.records)
    for i, ts, mean in frames:  # the right picture at the right time after the gap
        assert ts == pytest.approx(i / 25, abs=1e-3)
        assert mean == pytest.approx(2 * i, abs=3)


def test_variable_frame_rate_uses_container_timestamps(tmp_path: Path) -> None:
    clip = plain_clip(tmp_path / "v.mp4", 30)
    (_, d), = mp4_stts(clip)
    set_mp4_frame_durations(clip, [(10, d // 2), (10, 2 * d), (10, d // 2)])  # 50 fps, 12.5 fps, 50 fps
    with VideoSource(clip) as src:
        ts = np.array([f.timestamp for f in src])
    assert len(ts) == 30
    gaps = np.diff(ts)
    np.testing.assert_allclose(gaps[:9], 0.02, atol=1e-3)
    np.testing.assert_allclose(gaps[10:19], 0.08, atol=1e-3)
    np.testing.assert_allclose(gaps[20:], 0.02, atol=1e-3)
    # --fps 10 samples by time, not by frame count: few frames in the dense parts, most in the sparse
    sampler = FrameSampler(fps=10)
    taken = [i for i, t in enumerate(ts) if sampler.take(VideoFrame(i, float(t), np.zeros((1, 1, 3), np.uint8)))]
    assert abs(len(taken) - 10 * ts[-1]) <= 1  # on average F per second of video time
    for t in ts[taken]:  # and never more than F in any second
        assert np.sum((ts[taken] >= t) & (ts[taken] < t + 1.0)) <= 10
    assert len([i for i in taken if i < 10]) == 2 and len([i for i in taken if 10 <= i < 20]) >= 6


def test_sampler_stride_and_validation() -> None:
    s = FrameSampler(stride=3)
    assert [i for i in range(10) if s.take(VideoFrame(i, i / 30, np.zeros((1, 1, 3), np.uint8)))] == [0, 3, 6, 9]
    with pytest.raises(ValueError):
        FrameSampler(stride=0)
    with pytest.raises(ValueError):
        FrameSampler(fps=0)


def who_is_where(actors: dict[str, Actor], index: int, box: np.ndarray) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    here = {n: a.path(index) for n, a in actors.items() if a.path(index) is not None}
    return min(here, key=lambda n: np.hypot(here[n][0] + TILE / 2 - cx, here[n][1] + TILE / 2 - cy))


@pytest.fixture(scope="module")
def crossing_clip(tmp_path_factory: pytest.TempPathFactory, tiles: dict[str, np.ndarray]) -> tuple[Path, dict]:
    """A walks right; T walks left in front of A (A hidden mid-way); both leave; nobody for 8 frames;
    T comes back elsewhere and O (new) appears."""
    actors = {
        "A": Actor(tiles["astronaut"], lambda i: (10 + 8 * i, 80) if i < 30 else None),
        "T": Actor(tiles["trump"], lambda i: (226 - 8 * i, 84) if i < 30 else None if i < 38 else (20, 10)),
        "O": Actor(tiles["obama"], lambda i: (200, 140) if i >= 38 else None),
    }
    path = write_clip(tmp_path_factory.mktemp("clips") / "cross.mp4", list(actors.values()), n_frames=46,
                      size=SIZE, fps=25.0)
    return path, actors


def test_ids_survive_crossing_occlusion_and_reentry(analyzer, crossing_clip) -> None:
    path, actors = crossing_clip
    ids: dict[str, set[int]] = {"A": set(), "T": set(), "O": set()}
    seen = []
    for r in analyzer.stream(str(path)):
        seen.append(r.frame_index)
        for f in r.faces:
            ids[who_is_where(actors, r.frame_index, f.box)].add(f.track_id)
            assert f.smoothed_probs is not None and set(f.smoothed_probs) == set(analyzer.classes)
        if 30 <= r.frame_index < 38:
            assert r.faces == []  # nobody there: no phantom faces from the tracker
        if 12 <= r.frame_index <= 15:
            assert len(r.faces) == 1  # A is hidden behind T
    assert seen == list(range(46))
    assert len(ids["A"]) == len(ids["T"]) == len(ids["O"]) == 1, ids
    assert len(ids["A"] | ids["T"] | ids["O"]) == 3


def test_without_appearance_a_reentry_is_a_new_person(analyzer, crossing_clip) -> None:
    path, actors = crossing_clip
    t_ids = set()
    for r in analyzer.stream(str(path), stride=2, appearance=False):
        t_ids |= {f.track_id for f in r.faces if who_is_where(actors, r.frame_index, f.box) == "T"}
    assert len(t_ids) == 2  # IoU alone cannot link the re-entry: the appearance stage is what does


def test_stream_stride_max_faces_and_smoothing(analyzer, tiles, tmp_path: Path) -> None:
    actors = [Actor(tiles[k], (lambda x: lambda i: (x, 60 + (i % 3)))(x)) for k, x in
              (("astronaut", 10), ("trump", 118), ("obama", 226))]
    path = write_clip(tmp_path / "three.avi", actors, n_frames=7, size=SIZE, fps=10.0)
    results = list(analyzer.stream(str(path), stride=3, max_faces=2, smoothing="none"))
    assert [r.frame_index for r in results] == [0, 3, 6]
    assert [r.timestamp for r in results] == pytest.approx([0.0, 0.3, 0.6], abs=1e-3)
    full = analyzer(render_first(path))
    assert len(full.faces) == 3
    top2 = sorted(f.score for f in full.faces)[-2:]
    for r in results:
        assert len(r.faces) == 2
        assert sorted(f.score for f in r.faces) == pytest.approx(top2, abs=0.02)
        for f in r.faces:
            assert f.smoothed_probs == pytest.approx(f.probs)  # smoothing "none"
    with pytest.raises(ValueError, match="smoothing"):  # checked at the call, not at the first frame
        analyzer.stream(str(path), smoothing="median")
    with pytest.raises(VideoReadError, match="nope.mp4"):
        analyzer.stream(str(path.with_name("nope.mp4")))


def render_first(path: Path) -> np.ndarray:
    ok, bgr = cv2.VideoCapture(str(path)).read()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_summarize_tracks_matches_the_stream(analyzer, crossing_clip) -> None:
    from lightfer.video import summarize_tracks

    path, _ = crossing_clip
    results = list(analyzer.stream(str(path), stride=2))
    people = summarize_tracks(results)
    assert [p["track_id"] for p in people] == [1, 2, 3]
    counts = {}
    for r in results:
        for f in r.faces:
            counts[f.track_id] = counts.get(f.track_id, 0) + 1
    assert {p["track_id"]: p["frames"] for p in people} == counts
    trump = people[1]  # analysed every 0.08 s: frames 0-28 (15 x 0.08) and 38-44 (3 x 0.08 + the last one)
    assert trump["time_on_screen"] == pytest.approx(15 * 0.08 + 4 * 0.08, abs=0.01)
    assert summarize_tracks([]) == []
    assert summarize_tracks(analyzer.stream(str(path), stride=2)) == people  # lazy input, same answer


def test_http_url_is_read_as_a_stream(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    plain_clip(tmp_path / "served.mp4", 12, fps=12.0)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/served.mp4"
        assert is_video_source(url)
        with VideoSource(url) as src:
            assert not src.is_live and src.frame_count == 12  # a served file keeps its length and timestamps
            frames = list(src)
        assert [f.index for f in frames] == list(range(12))
        assert frames[-1].timestamp == pytest.approx(11 / 12, abs=1e-3)
        with pytest.raises(VideoReadError, match="missing.mp4"):
            VideoSource(url.replace("served", "missing"))
    finally:
        server.shutdown()
        server.server_close()


def test_decoding_keeps_no_frames_behind(tmp_path: Path) -> None:
    import tracemalloc

    clip = plain_clip(tmp_path / "long.avi", 400, size=(96, 72))
    marks = {}
    tracemalloc.start()
    try:
        with VideoSource(clip) as src:
            for frame in src:
                if frame.index in (100, 399):
                    marks[frame.index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert marks[399] - marks[100] < 32 * 1024  # a leaked frame alone would be 20 KB, 300 of them 6 MB


def test_live_reader_hands_out_the_newest_frame(tmp_path: Path) -> None:
    """A consumer slower than the source gets the latest frame, never a backlog (as for cameras)."""
    import time

    clip = plain_clip(tmp_path / "live.avi", 60)
    src = VideoSource(clip, drop_stale=True)
    got = []
    for f in src:
        got.append(f.index)
        time.sleep(0.02)  # the reader thread decodes far faster than this
    src.close()
    assert got == sorted(set(got)) and got[-1] == 59  # in order, and the end is never lost
    assert src.dropped > 0 and src.dropped + len(got) == 60
    assert src._pump is not None and not src._pump.is_alive()
    # closing in the middle stops the reader thread too
    src = VideoSource(clip, drop_stale=True)
    it = iter(src)
    next(it)
    src.close()
    assert not src._pump.is_alive() and src._cap is None
