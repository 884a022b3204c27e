"""Video sources for ``lightfer predict``: files, ``--camera N`` and stream URLs.

``predict`` calls :func:`wants_video` and hands over to :func:`run_video`, which streams the
frames through the tracker and writes the annotated video, CSV/JSONL timelines, the per-person
summary and plots. Ctrl-C stops the analysis and still closes every output properly.
Heavy modules are imported inside the functions so that ``lightfer --help`` stays fast.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

VIDEO_EPILOG = """

video, webcam and streams:
  lightfer predict clip.mp4 --save-video annotated.mp4 --csv timeline.csv --summary people.json
  lightfer predict clip.mp4 --stride 3 --plots plots/ --smoothing window --window 8
  lightfer predict --camera 0 --jsonl live.jsonl          # Ctrl-C to stop; outputs stay valid
  lightfer predict rtsp://192.168.1.20:554/stream --fps 5 --csv cam.csv
  video exit code: 0 done, 1 source cannot be opened, 2 usage error, 130 stopped by Ctrl-C (outputs complete)."""


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """The video options of ``predict`` (``--max-faces`` and ``--csv`` are shared with images)."""
    g = p.add_argument_group("video, webcam and streams (PATH is a video file or an rtsp/http URL)")
    g.add_argument("--camera", type=int, metavar="N", help="read camera number N instead of PATHs")
    g.add_argument("--save-video", metavar="FILE", help="annotated video (.mp4/.avi/.mov/.mkv) at the source rate and size")
    g.add_argument("--jsonl", metavar="FILE", help="timeline, one JSON line per analysed frame")
    g.add_argument("--summary", metavar="FILE", help="per-person summary JSON (time on screen, expression shares)")
    g.add_argument("--plots", metavar="DIR", help="one timeline PNG per person")
    g.add_argument("--stride", type=int, default=1, metavar="N", help="analyse every N-th frame (default 1)")
    g.add_argument("--fps", type=float, default=None, metavar="F", help="analyse at most F frames per second")
    g.add_argument("--smoothing", choices=["ema", "window", "none"], default="ema",
                   help="per-person smoothing of probabilities (default ema)")
    g.add_argument("--smoothing-alpha", type=float, default=0.3, metavar="A",
                   help="EMA weight of the newest frame, in (0, 1] (default 0.3)")
    g.add_argument("--window", type=int, default=5, metavar="N", help="frames averaged by --smoothing window (default 5)")


def wants_video(args: argparse.Namespace) -> bool:
    """True when ``predict`` was given a camera, a stream URL or a video file."""
    from lightfer.video import is_video_source

    return getattr(args, "camera", None) is not None or any(is_video_source(p) for p in args.paths)


class _StopOnCtrlC:
    """First Ctrl-C: finish the current frame, then stop. Second: stop at once. Main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this frame (Ctrl-C again to stop at once)", file=sys.stderr)

    def __enter__(self) -> "_StopOnCtrlC":
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold off Ctrl-C while outputs are being finished (main thread only)."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _check(args: argparse.Namespace) -> str | None:
    """A usage error message, or None."""
    from lightfer.video import is_video_source

    if args.camera is not None and args.paths:
        return "give either --camera N or PATHs, not both"
    if args.camera is None:
        if len(args.paths) != 1:
            return "give one video file or stream URL at a time"
        if not is_video_source(args.paths[0]):
            return f"{args.paths[0]}: not a video (images and videos cannot be mixed)"
    if getattr(args, "json", None):
        return "--json is for images; for video use --jsonl (timeline) or --summary (per person)"
    if getattr(args, "save_dir", None):
        return "--save-dir is for images; for video use --save-video FILE"
    if args.stride < 1:
        return f"--stride must be >= 1, got {args.stride}"
    if args.fps is not None and args.fps <= 0:
        return f"--fps must be > 0, got {args.fps}"
    if not 0 < args.smoothing_alpha <= 1:
        return f"--smoothing-alpha must be in (0, 1], got {args.smoothing_alpha}"
    if args.window < 1:
        return f"--window must be >= 1, got {args.window}"
    if args.max_faces is not None and args.max_faces < 1:
        return f"--max-faces must be >= 1, got {args.max_faces}"
    if args.csv == "-" or args.jsonl == "-":
        return "video timelines need a file name, not '-'"
    if args.save_video:
        from lightfer.timeline import VIDEO_FOURCC

        if Path(args.save_video).suffix.lower() not in VIDEO_FOURCC:
            return f"--save-video {args.save_video}: use one of {', '.join(sorted(VIDEO_FOURCC))}"
    outputs = [p for p in (args.save_video, args.csv, args.jsonl, args.summary) if p]
    if args.camera is None and any(Path(p).resolve() == Path(args.paths[0]).resolve() for p in outputs):
        return f"{args.paths[0]}: an output would overwrite the input video"
    return None


def run_video(args: argparse.Namespace, analyzer: Any = None) -> int:
    """Analyse one video file, camera or stream; 0 on success, 1 on error, 130 when interrupted."""
    error = _check(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from lightfer.cli.common import set_threads

    set_threads(args.threads)
    from tqdm import tqdm

    from lightfer.timeline import AnnotatedVideoWriter, SummaryBuilder, TimelineWriter, plot_timelines, write_json
    from lightfer.video import VideoReadError, VideoSource, iter_video

    try:
        src = VideoSource(args.camera if args.camera is not None else args.paths[0])
    except VideoReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if analyzer is None:
            from lightfer.cli.common import build_analyzer

            analyzer = build_analyzer(args, max_faces=None)  # --max-faces is applied per frame by the stream
        classes = tuple(analyzer.classes)
        timelines = [TimelineWriter(p, classes) for p in (args.csv, args.jsonl) if p]
    except BaseException:
        src.close()
        raise
    fps_out = src.fps or 30.0
    summary = SummaryBuilder(classes, source=src.name)
    video_out: AnnotatedVideoWriter | None = None
    bar = tqdm(total=src.frame_count, unit="frame", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True,
               desc=Path(src.name).name if not src.is_live else src.name)
    frames = analysed = faces = 0
    last_faces: list = []
    last_t = 0.0
    interrupted = False
    t_start = time.perf_counter()
    frame_iter = iter_video(analyzer, src, stride=args.stride, fps=args.fps, max_faces=args.max_faces,
                            smoothing=args.smoothing, smoothing_alpha=args.smoothing_alpha, window=args.window)
    ctrl_c = _StopOnCtrlC()
    try:
        ctrl_c.__enter__()
        for frame, result in frame_iter:
            frames += 1
            last_t = frame.timestamp
            if result is not None:
                analysed += 1
                faces += len(result.faces)
                last_faces = result.faces
                for w in timelines:
                    w.write(result)
                summary.add(result)
                bar.set_postfix(faces=len(result.faces), refresh=False)
            if args.save_video:
                if video_out is None:
                    h, w = frame.image.shape[:2]
                    video_out = AnnotatedVideoWriter(args.save_video, fps_out, (w, h))
                video_out.write(frame.image, last_faces)
            bar.update(1)
            if ctrl_c.requested:
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ctrl_c.__exit__()
        with _no_interrupts():
            frame_iter.close()
            bar.close()
            for w in timelines:
                w.close()
            if video_out is not None:
                video_out.close()
            src.close()
            elapsed = time.perf_counter() - t_start
            data = summary.finish(frames_read=frames, skipped_frames=src.skipped, duration=round(last_t, 3),
                                  source_fps=src.fps, stride=args.stride, analysis_fps=args.fps,
                                  smoothing=args.smoothing, interrupted=interrupted)
            if args.summary:
                write_json(args.summary, data)
            if args.plots:
                plot_timelines(summary, args.plots)
    if not args.quiet:
        for p in data["persons"]:
            share = p["expression_share"][p["dominant_expression"]] if p["dominant_expression"] else 0.0
            print(f"  #{p['track_id']}: {p['time_on_screen']:.1f} s on screen ({p['first_seen']:.1f}-{p['last_seen']:.1f} s), "
                  f"mostly {p['dominant_expression']} ({share * 100:.0f}%)")
    line = (f"{src.name}: {frames} frames read, {analysed} analysed, {faces} faces, {len(data['persons'])} people"
            f" ({frames / max(elapsed, 1e-9):.1f} frames/s)" + (", interrupted" if interrupted else ""))
    if not args.quiet or interrupted:
        print(line, file=sys.stderr)
    return 130 if interrupted else 0
