"""`lightfer predict VIDEO` end to end: outputs, Ctrl-C, bounded memory, summaries."""
from __future__ import annotations

import argparse
import csv
import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_helpers import ScriptedAnalyzer

from lightfer.cli import build_parser, main
from lightfer.eval.video_bench import Actor, write_clip
from lightfer.structures import Face, FrameResult
from lightfer.timeline import SummaryBuilder, _Series
from lightfer.video import StreamAnalyzer, VideoFrame

SIZE = (320, 240)


@pytest.fixture(scope="module")
def two_people(tmp_path_factory: pytest.TempPathFactory, tiles: dict[str, np.ndarray]) -> Path:
    """17 frames at 10 fps: A all along, T from frame 6 on."""
    actors = [Actor(tiles["astronaut"], lambda i: (20 + 3 * i, 60)),
              Actor(tiles["trump"], lambda i: (210, 100 - 2 * i) if i >= 6 else None)]
    return write_clip(tmp_path_factory.mktemp("cli") / "two.mp4", actors, n_frames=17, size=SIZE, fps=10.0)


def video_info(path: Path) -> tuple[int, tuple[int, int], float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return n, size, cap.get(cv2.CAP_PROP_FPS)


def test_predict_video_writes_every_output(two_people: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["predict", str(two_people), "--stride", "2", "--threads", "1", "--no-progress", "-q",
               "--save-video", str(out / "annotated.mp4"), "--csv", str(out / "t.csv"),
               "--jsonl", str(out / "t.jsonl"), "--summary", str(out / "s.json"), "--plots", str(out / "plots")])
    assert rc == 0
    # annotated video: every source frame, same size and rate
    assert video_info(out / "annotated.mp4") == (17, SIZE, 10.0)
    frames = [json.loads(line) for line in (out / "t.jsonl").read_text().splitlines()]
    assert [f["frame_index"] for f in frames] == list(range(0, 17, 2))
    assert [f["timestamp"] for f in frames] == pytest.approx([i / 10 for i in range(0, 17, 2)], abs=1e-3)
    assert [len(f["faces"]) for f in frames] == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    rows = list(csv.DictReader((out / "t.csv").open()))
    assert len(rows) == sum(len(f["faces"]) for f in frames)  # one row per face per analysed frame
    by_frame = {(int(r["frame_index"]), int(r["track_id"])) for r in rows}
    assert by_frame == {(f["frame_index"], face["track_id"]) for f in frames for face in f["faces"]}
    assert {int(r["track_id"]) for r in rows} == {1, 2}  # two people, stable IDs
    classes = [c[2:] for c in rows[0] if c.startswith("p_")]
    assert len(classes) == 7
    for r in rows:
        raw = np.array([float(r[f"p_{c}"]) for c in classes])
        sm = np.array([float(r[f"smoothed_{c}"]) for c in classes])
        assert raw.sum() == pytest.approx(1, abs=2e-3) and sm.sum() == pytest.approx(1, abs=2e-3)
        assert r["label"] == classes[int(sm.argmax())] and r["raw_label"] == classes[int(raw.argmax())]
        assert float(r["lm0_x"]) > float(r["x1"])  # landmarks exported, inside the box
    summary = json.loads((out / "s.json").read_text())
    assert summary["frames_read"] == 17 and summary["frames_analysed"] == 9 and not summary["interrupted"]
    people = {p["track_id"]: p for p in summary["persons"]}
    assert set(people) == {1, 2}
    assert people[1]["time_on_screen"] == pytest.approx(1.8, abs=0.01)  # 9 analysed frames x 0.2 s
    assert people[2]["time_on_screen"] == pytest.approx(1.2, abs=0.01)  # frames 6..16
    for p in people.values():
        assert sum(p["expression_share"].values()) == pytest.approx(1, abs=1e-3)
        assert p["dominant_expression"] == max(p["expression_share"], key=p["expression_share"].get)
    pngs = sorted((out / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["person_001.png", "person_002.png"]
    assert cv2.imread(str(pngs[0])) is not None


def test_video_usage_errors(two_people: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(two_people), "--stride", "0", "--no-progress"]) == 2
    assert "--stride" in capsys.readouterr().err
    assert main(["predict", str(two_people), "--json", "x.json"]) == 2
    assert "--jsonl" in capsys.readouterr().err
    assert main(["predict", str(two_people), str(two_people)]) == 2
    assert main(["predict", "--camera", "0", str(two_people)]) == 2
    assert main(["predict", str(two_people.with_name("nope.mp4"))]) == 1
    assert "nope.mp4" in capsys.readouterr().err
    assert main(["predict"]) == 2
    with pytest.raises(SystemExit):
        main(["predict", str(two_people), "--smoothing", "median"])


def test_ctrl_c_still_leaves_complete_outputs(two_people: Path, tmp_path: Path) -> None:
    from lightfer.cli.video import run_video

    def script(k: int) -> list:
        return [((20 + 3 * k, 70, 80 + 3 * k, 130), (0.1, 0.7, 0.2))]

    args = build_parser().parse_args(
        ["predict", str(two_people), "--no-progress", "-q", "--save-video", str(tmp_path / "a.avi"),
         "--csv", str(tmp_path / "t.csv"), "--jsonl", str(tmp_path / "t.jsonl"), "--summary", str(tmp_path / "s.json"),
         "--plots", str(tmp_path / "plots")])
    assert run_video(args, analyzer=ScriptedAnalyzer(script, raise_at=5)) == 130
    n, size, _ = video_info(tmp_path / "a.avi")
    assert (n, size) == (5, SIZE)  # the 5 frames fully processed before the interrupt
    assert len(list(csv.DictReader((tmp_path / "t.csv").open()))) == 5
    assert len([json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]) == 5
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] and summary["frames_analysed"] == 5
    assert summary["persons"][0]["dominant_expression"] == "happy"
    assert (tmp_path / "plots" / "person_001.png").exists()


def test_memory_stays_flat_over_many_frames() -> None:
    """People come and go for 600 frames: tracks, smoothing state and buffers must not pile up."""

    def script(k: int) -> list:  # up to 3 people; each slot 2.4 s on, 2.4 s off (> max_lost_s: a new person)
        return [((40 + 100 * j + k % 20, 40, 90 + 100 * j + k % 20, 100),
                 tuple(np.random.default_rng(k + j).dirichlet([1, 1, 1])))
                for j in range(3) if (k // 60 + j) % 2 == 0]

    state = StreamAnalyzer(ScriptedAnalyzer(script), appearance=True)
    canvas = np.zeros((120, 360, 3), np.uint8)

    def run(start: int, n: int) -> None:
        for i in range(start, start + n):
            canvas[:] = 0
            for j in range(3):  # each new person looks different (a colour of their own)
                canvas[30:110, 30 + 100 * j:120 + 100 * j] = np.random.default_rng(1000 * j + i // 120).integers(
                    0, 255, 3, dtype=np.uint8)
            state.analyse(VideoFrame(i, i / 25, canvas))

    run(0, 100)  # warm up caches and the first tracks
    tracemalloc.start()
    run(100, 100)
    after_short = tracemalloc.get_traced_memory()[0]
    run(200, 400)
    after_long = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after_long - after_short < 64 * 1024, f"grew {after_long - after_short} bytes over 400 frames"
    assert len(state.tracker.tracks) <= 6 and len(state.smoother) <= 6
    assert state.tracker._next_id > 10  # people really did come and go


def test_summary_known_answer_and_bounded_series() -> None:
    classes = ("happy", "sad")

    def frame(t: float, labels: dict[int, str]) -> FrameResult:
        faces = []
        for tid, lab in labels.items():
            p = {"happy": 0.9, "sad": 0.1} if lab == "happy" else {"happy": 0.2, "sad": 0.8}
            faces.append(Face(box=np.zeros(4), score=1.0, landmarks=np.zeros((5, 2)), label=lab, probs=p,
                              track_id=tid, smoothed_probs=p))
        return FrameResult(faces=faces, timestamp=t, frame_index=int(t * 10))

    sb = SummaryBuilder(classes)
    for t, labels in [(0.0, {1: "happy"}), (0.5, {1: "happy", 2: "sad"}), (1.5, {1: "sad"}), (2.0, {})]:
        sb.add(frame(t, labels))
    s = sb.finish()
    p1, p2 = s["persons"]
    assert p1["time_on_screen"] == pytest.approx(2.0)  # 0.5 + 1.0 + 0.5 (variable gaps weigh in)
    assert p1["expression_share"] == pytest.approx({"happy": 0.75, "sad": 0.25})
    assert p1["dominant_expression"] == "happy"
    assert p2["time_on_screen"] == pytest.approx(1.0) and p2["dominant_expression"] == "sad"
    assert (p1["first_seen"], p1["last_seen"], p1["frames"]) == (0.0, 1.5, 3)

    series = _Series(max_points=64)
    for i in range(10_000):
        series.add(i / 25, np.array([i % 2, 1 - i % 2], dtype=float))
    t, p = series.arrays()
    assert len(t) <= 65 and t[0] < 6 and t[-1] > 394  # bins of 256 frames (10 s)
    np.testing.assert_allclose(p.mean(0), [0.5, 0.5], atol=0.01)


def test_help_lists_video_examples() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    for flag in ("--camera", "--save-video", "--jsonl", "--summary", "--plots", "--stride", "--fps", "--smoothing",
                 "--smoothing-alpha", "--window", "--max-faces", "rtsp://"):
        assert flag in text
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_benchmark_video_option(capsys: pytest.CaptureFixture) -> None:
    from lightfer.eval.video_bench import format_video_table

    assert main(["benchmark", "--video", "missing_clip.mp4"]) == 1
    assert "missing_clip.mp4" in capsys.readouterr().err
    row = {"backend": "onnx", "threads": 2, "frames": 150, "faces_per_frame": 4.0, "fps": 12.5, "size": [640, 480],
           "cpu_ms_per_frame": 150.0, "ms_per_frame": {"detect": 60.0, "align": 1.0, "classify": 3.0, "track": 1.5}}
    table = format_video_table([row])
    assert "640x480" in table and "4.0 faces/frame" in table and "12.5" in table and "track ms" in table


def test_output_guards_and_bad_frames(two_people: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      caplog: pytest.LogCaptureFixture) -> None:
    from lightfer.cli.video import run_video

    assert main(["predict", str(two_people), "--save-video", str(tmp_path / "a.gif")]) == 2
    assert ".mp4" in capsys.readouterr().err
    assert main(["predict", str(two_people), "--csv", str(two_people)]) == 2  # never overwrite the input
    assert "overwrite" in capsys.readouterr().err

    class Flaky(ScriptedAnalyzer):
        def detect(self, rgb: np.ndarray) -> list[Face]:
            faces = super().detect(rgb)
            if self.calls in (3, 4):
                raise RuntimeError("boom")
            return faces

    args = build_parser().parse_args(["predict", str(two_people), "--no-progress", "--jsonl", str(tmp_path / "t.jsonl")])
    assert run_video(args, analyzer=Flaky(lambda k: [((20, 20, 70, 80), (0.2, 0.5, 0.3))])) == 0
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(lines) == 17
    assert [x["frame_index"] for x in lines if x["error"]] == [2, 3]
    assert all(len(x["faces"]) == 1 for x in lines if not x["error"])
    assert "#1:" in capsys.readouterr().out  # per-person lines printed at the end
    always = Flaky(lambda k: [((20, 20, 70, 80), (0.2, 0.5, 0.3))])
    always.detect = lambda rgb: (_ for _ in ()).throw(RuntimeError("model broken"))
    with pytest.raises(RuntimeError, match="model broken"):
        run_video(args, analyzer=always)


def test_real_ctrl_c_finishes_the_frame_then_stops(two_people: Path, tmp_path: Path) -> None:
    import signal

    from lightfer.cli.video import run_video

    class CtrlC(ScriptedAnalyzer):
        def detect(self, rgb: np.ndarray) -> list[Face]:
            if self.calls == 5:
                signal.raise_signal(signal.SIGINT)  # as from the keyboard, in the middle of frame 5
            return super().detect(rgb)

    before = signal.getsignal(signal.SIGINT)
    args = build_parser().parse_args(["predict", str(two_people), "--no-progress", "-q", "--csv",
                                      str(tmp_path / "t.csv"), "--save-video", str(tmp_path / "a.mp4")])
    assert run_video(args, analyzer=CtrlC(lambda k: [((20, 20, 70, 80), (0.2, 0.5, 0.3))])) == 130
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [int(r["frame_index"]) for r in rows] == list(range(6))  # frame 5 completed, nothing after
    assert video_info(tmp_path / "a.mp4")[0] == 6


@pytest.mark.parametrize("smoothing", [["--smoothing", "window", "--window", "3"],
                                       ["--smoothing", "ema", "--smoothing-alpha", "0.5"]])
def test_exported_smoothing_follows_each_person(two_people: Path, tmp_path: Path, smoothing: list[str]) -> None:
    """Two people with their own probability sequences: smoothed columns are computed per track."""
    from lightfer.cli.video import run_video

    rng = np.random.default_rng(3)
    seqs = rng.dirichlet([1, 1, 1], size=(17, 2))

    def script(k: int) -> list:
        return [((10, 10, 60, 70), tuple(seqs[k, 0])), ((200, 100, 250, 160), tuple(seqs[k, 1]))]

    args = build_parser().parse_args(["predict", str(two_people), "--no-progress", "-q", "--stride", "2",
                                      "--csv", str(tmp_path / "t.csv"), *smoothing])
    analyzer = ScriptedAnalyzer(script)
    assert run_video(args, analyzer=analyzer) == 0
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    for tid, person in ((1, 0), (2, 1)):
        mine = [r for r in rows if int(r["track_id"]) == tid]
        raw = np.array([[float(r[f"p_{c}"]) for c in analyzer.classes] for r in mine])
        sm = np.array([[float(r[f"smoothed_{c}"]) for c in analyzer.classes] for r in mine])
        np.testing.assert_allclose(raw, seqs[:9, person], atol=1e-4)  # analysed calls 0..8
        if smoothing[1] == "window":
            want = np.array([raw[max(0, i - 2): i + 1].mean(0) for i in range(len(raw))])
        else:
            want = [raw[0]]
            for p in raw[1:]:
                want.append(0.5 * p + 0.5 * want[-1])
        np.testing.assert_allclose(sm, np.array(want), atol=2e-4)
        assert [r["label"] for r in mine] == [analyzer.classes[k] for k in sm.argmax(1)]


def test_missing_camera_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--camera", "97", "--no-progress"]) == 1
    assert "camera 97" in capsys.readouterr().err
