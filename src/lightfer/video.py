"""Video, webcam and stream analysis: decode frames as a stream, analyse, track, smooth.

Frames come one at a time from OpenCV (files in any container/codec its FFmpeg reads, cameras by
index, RTSP/HTTP/RTMP URLs), so memory stays flat however long the video. Each analysed frame is
detected and classified as one batch by :class:`lightfer.Analyzer`, its faces are associated
with tracks by :class:`lightfer.tracking.FaceTracker` (ByteTrack, Zhang et al. ECCV 2022) and
their probabilities smoothed per track (:class:`lightfer.tracking.ProbSmoother`).

    >>> analyzer = lightfer.Analyzer()
    >>> for result in analyzer.stream("clip.mp4", stride=2):
    ...     print(result.timestamp, [(f.track_id, f.label) for f in result.faces])

Timestamps are the container's (variable frame rates are honoured); live sources use the wall
clock. Undecodable frames are skipped with a warning; their indices stay counted, so
``frame_index`` always names the frame's position in the source.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from lightfer.structures import Face, FrameResult
from lightfer.tracking import FaceTracker, ProbSmoother, TrackerConfig

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .mjpeg .mjpg .y4m".split()
)
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "udp://", "tcp://", "srt://", "http://", "https://")
IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff .gif".split())
FALLBACK_FPS = 30.0  # when a source does not tell its frame rate
MAX_ANALYSIS_FAILURES = 5  # consecutive frames whose analysis raised before the stream gives up


class VideoReadError(OSError):
    """A video, camera or stream could not be opened; the message names it."""


def is_video_source(src: str | os.PathLike | int) -> bool:
    """True for a camera index, a stream URL, or a path with a video extension."""
    if isinstance(src, int):
        return True
    s = str(src)
    if s.lower().startswith(STREAM_SCHEMES):
        # an http(s) URL ending in an image extension is a picture, everything else a stream
        return not (s.lower().startswith("http") and Path(s.split("?")[0]).suffix.lower() in IMAGE_EXTENSIONS)
    return Path(s).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoFrame:
    """One decoded frame."""

    index: int  # position in the source (undecodable frames count too)
    timestamp: float  # seconds from the start of the source
    image: np.ndarray  # RGB uint8 (H, W, 3)


class VideoSource:
    """Frames of a file, camera or stream URL, decoded lazily: ``for frame in VideoSource(path)``.

    Args:
        source: path, URL, or camera index (int).
        max_failures: consecutive undecodable frames after which the source is taken as ended.
        drop_stale: read in a background thread and hand out only the newest frame, so a slow
            consumer never falls behind a live source (default: on for cameras and live streams).
    """

    def __init__(self, source: str | os.PathLike | int, *, max_failures: int = 30,
                 drop_stale: bool | None = None) -> None:
        self.name = f"camera {source}" if isinstance(source, int) else str(source)
        self.max_failures = max_failures
        self.skipped = 0  # undecodable frames skipped so far
        self.dropped = 0  # live frames replaced by a newer one before they were used (drop_stale)
        self._pump: threading.Thread | None = None
        self._stop = threading.Event()
        is_url = not isinstance(source, int) and str(source).lower().startswith(STREAM_SCHEMES)
        if isinstance(source, int):
            cap = cv2.VideoCapture(source)
        else:
            if not is_url and not Path(source).is_file():
                raise VideoReadError(f"{self.name}: no such video file")
            cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            what = "camera" if isinstance(source, int) else "stream" if is_url else "video (unknown format or codec?)"
            raise VideoReadError(f"{self.name}: cannot open {what}")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps: float | None = float(fps) if 0 < fps < 1000 else None  # nominal frame rate
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.is_live = isinstance(source, int) or (is_url and count <= 0)
        self.frame_count: int | None = count if count > 0 and not self.is_live else None
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.drop_stale = self.is_live if drop_stale is None else bool(drop_stale)

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reader thread, release the decoder (idempotent)."""
        self._stop.set()
        if self._pump is not None and self._pump is not threading.current_thread():
            self._pump.join(timeout=5)
            if self._pump.is_alive():  # stuck in a network read: releasing under it could crash
                log.warning("%s: reader still blocked; leaving the stream to process exit", self.name)
                return
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._cap is None:
            raise VideoReadError(f"{self.name}: already closed")
        reads = self._newest(self._reads()) if self.drop_stale else self._reads()
        for index, ts, bgr in reads:
            if bgr.ndim == 2:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            yield VideoFrame(index, ts, cv2.cvtColor(bgr[..., :3], cv2.COLOR_BGR2RGB))

    def _newest(self, reads: Iterator[tuple[int, float, np.ndarray]]) -> Iterator[tuple[int, float, np.ndarray]]:
        """Run ``reads`` in a thread; yield only the newest item each time (older ones are dropped)."""
        cond = threading.Condition()
        slot: list = []
        done: list = []

        def pump() -> None:
            try:
                for item in reads:
                    with cond:
                        if slot:
                            self.dropped += 1
                            slot.clear()
                        slot.append(item)
                        cond.notify()
            except Exception:  # the consumer sees the end of the stream; say why
                log.exception("%s: reading failed", self.name)
            finally:
                with cond:
                    done.append(True)
                    cond.notify()

        self._pump = threading.Thread(target=pump, name=f"lightfer-reader {self.name}", daemon=True)
        self._pump.start()
        while True:
            with cond:
                while not slot and not done:
                    cond.wait(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                if not slot:
                    return
                item = slot.pop()
            yield item

    def _reads(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """(index, timestamp, BGR frame) for every decodable frame; skips and counts bad ones."""
        index, fails, last_ts, t0 = -1, 0, -1.0, time.monotonic()
        step = 1.0 / (self.fps or FALLBACK_FPS)
        while self._cap is not None and not self._stop.is_set():
            ok, bgr = self._cap.read()
            index += 1
            if not ok or bgr is None or bgr.size == 0:
                fails += 1
                if fails >= self.max_failures or (self.frame_count is not None and index >= self.frame_count):
                    break
                continue
            if fails:
                log.warning("%s: skipped %d undecodable frame(s) before frame %d", self.name, fails, index)
                self.skipped += fails
                fails = 0
            if self.is_live:
                ts = time.monotonic() - t0
            else:
                ts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
                if not np.isfinite(ts) or ts <= last_ts:  # no usable container time: nominal rate
                    ts = max(index * step, last_ts + step) if last_ts >= 0 or index else 0.0
            last_ts = ts
            yield index, ts, bgr
        if fails and self.frame_count is not None and index - fails < self.frame_count - 1:
            log.warning("%s: skipped %d undecodable frame(s) at the end", self.name, fails)
            self.skipped += fails


class FrameSampler:
    """Which frames to analyse: every ``stride``-th decoded frame, at most ``fps`` per second of video time."""

    def __init__(self, stride: int = 1, fps: float | None = None) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.stride, self.fps = int(stride), fps
        self._next_t: float | None = None
        self._seen = 0

    def take(self, frame: VideoFrame) -> bool:
        """True when this frame is to be analysed (call once per decoded frame, in order)."""
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return False
        if self.fps is None:
            return True
        if self._next_t is not None and frame.timestamp < self._next_t - 1e-6:
            return False
        period = 1.0 / self.fps
        nxt = (self._next_t if self._next_t is not None else frame.timestamp) + period
        self._next_t = nxt if nxt > frame.timestamp else frame.timestamp + period  # fell behind: resync
        return True


def appearance_feature(rgb: np.ndarray, face: Face) -> np.ndarray:
    """Cheap appearance vector (112,) for re-identifying a face: hue-saturation histogram + 8x8 gray.

    Computed on the 5-point aligned 32 px crop, so it does not depend on where the face is in the frame.
    """
    from lightfer.alignment import align_face

    crop = align_face(rgb, np.asarray(face.landmarks, dtype=np.float32), 32, 0.3)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [12, 4], [0, 180, 0, 256]).ravel().astype(np.float64)
    hist = np.sqrt(hist / max(hist.sum(), 1e-12))
    gray = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (8, 8), interpolation=cv2.INTER_AREA)
    g = gray.astype(np.float64).ravel()
    g -= g.mean()
    g /= max(float(np.linalg.norm(g)), 1e-9)
    hist /= max(float(np.linalg.norm(hist)), 1e-9)
    return np.concatenate([hist, g])


class StreamAnalyzer:
    """Per-frame state of a video analysis (tracker and smoother); one per source.

    Args:
        analyzer: a :class:`lightfer.Analyzer` (anything with ``detector.detect(rgb)``,
            ``analyze_array(rgb, source=, faces=)`` and ``classes``).
        max_faces: analyse at most this many faces per frame (highest detector scores).
        smoothing: ``"ema"``, ``"window"`` or ``"none"``; ``smoothing_alpha`` / ``window`` set it.
        tracker: tracker thresholds; ``appearance`` adds re-identification features.
    """

    def __init__(self, analyzer: Any, *, max_faces: int | None = None, smoothing: str = "ema",
                 smoothing_alpha: float = 0.3, window: int = 5, tracker: TrackerConfig | None = None,
                 appearance: bool = True, source: str | None = None) -> None:
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.analyzer, self.max_faces, self.appearance, self.source = analyzer, max_faces, appearance, source
        self.classes: tuple[str, ...] = tuple(analyzer.classes)
        self.tracker = FaceTracker(tracker or TrackerConfig())
        self.smoother = ProbSmoother(smoothing, alpha=smoothing_alpha, window=window)

    def analyse(self, frame: VideoFrame) -> FrameResult:
        """Detect, classify (one batch), track and smooth the faces of one frame."""
        rgb = frame.image
        t0 = time.perf_counter()
        faces = self.analyzer.detector.detect(rgb)
        if self.max_faces is not None and len(faces) > self.max_faces:
            faces = sorted(faces, key=lambda f: -f.score)[: self.max_faces]
        t1 = time.perf_counter()
        result = self.analyzer.analyze_array(rgb, source=self.source, faces=faces)
        t2 = time.perf_counter()
        faces = result.faces
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        feats = None
        if self.appearance and faces:
            feats = np.stack([appearance_feature(rgb, f) for f in faces])
        ids = self.tracker.update(boxes, np.array([f.score for f in faces]), timestamp=frame.timestamp,
                                  features=feats)
        self.smoother.forget(self.tracker.removed_ids)
        for face, tid in zip(faces, ids.tolist()):
            face.track_id = int(tid)
            p = np.array([face.probs.get(c, 0.0) for c in self.classes])
            s = self.smoother.update(face.track_id, p)
            face.smoothed_probs = {c: float(v) for c, v in zip(self.classes, s)}
        result.frame_index, result.timestamp = frame.index, frame.timestamp
        result.timings = {**result.timings, "detect": (t1 - t0) * 1e3, "track": (time.perf_counter() - t2) * 1e3}
        return result


def iter_video(analyzer: Any, source: str | os.PathLike | int | VideoSource, *, stride: int = 1,
               fps: float | None = None, **options: Any) -> Iterator[tuple[VideoFrame, FrameResult | None]]:
    """Every decoded frame with its result (``None`` for frames the sampler skips).

    ``options`` go to :class:`StreamAnalyzer`. Options and the source are checked at once
    (``ValueError``, :class:`VideoReadError`); frames are read lazily. The source is closed when
    the iterator ends or is closed (``break`` in a ``for`` loop, Ctrl-C).
    """
    sampler = FrameSampler(stride, fps)
    src = source if isinstance(source, VideoSource) else VideoSource(source)
    try:
        state = StreamAnalyzer(analyzer, source=src.name, **options)
    except BaseException:
        src.close()
        raise
    return _iterate(src, sampler, state)


def _iterate(src: VideoSource, sampler: FrameSampler,
             state: StreamAnalyzer) -> Iterator[tuple[VideoFrame, FrameResult | None]]:
    try:
        failures = 0
        for frame in src:
            if not sampler.take(frame):
                yield frame, None
                continue
            try:
                result = state.analyse(frame)
                failures = 0
            except Exception as e:  # one bad frame must not end an hour-long run; a broken model must
                failures += 1
                if failures >= MAX_ANALYSIS_FAILURES:
                    raise
                log.warning("%s: frame %d could not be analysed (%s: %s)", src.name, frame.index, type(e).__name__, e)
                result = FrameResult(source=src.name, image_size=(frame.image.shape[1], frame.image.shape[0]),
                                     frame_index=frame.index, timestamp=frame.timestamp,
                                     error=f"{src.name}: frame {frame.index}: {type(e).__name__}: {e}")
            yield frame, result
    finally:
        src.close()


def stream(analyzer: Any, source: str | os.PathLike | int | VideoSource, *, stride: int = 1,
           fps: float | None = None, max_faces: int | None = None, smoothing: str = "ema",
           smoothing_alpha: float = 0.3, window: int = 5, **options: Any) -> Iterator[FrameResult]:
    """One :class:`FrameResult` per analysed frame of a video file, camera index or stream URL.

    Faces carry ``track_id`` and ``smoothed_probs``; results carry ``frame_index`` and
    ``timestamp`` (seconds). Lazy and constant-memory: frames are decoded one at a time.
    Bad options and unopenable sources raise here, before the first frame.
    """
    frames = iter_video(analyzer, source, stride=stride, fps=fps, max_faces=max_faces, smoothing=smoothing,
                        smoothing_alpha=smoothing_alpha, window=window, **options)
    return (result for _, result in frames if result is not None)


def summarize_tracks(results: Iterable[FrameResult], classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per-person summary of analysed frames, as in the CLI's ``--summary`` (its ``persons`` list).

    Each entry: ``track_id``, ``first_seen``, ``last_seen``, ``time_on_screen`` (s), ``frames``,
    ``dominant_expression``, ``expression_share`` and ``mean_probs``. ``classes`` default to the
    probability keys of the first face found. ``results`` may be a lazy :func:`stream`.
    """
    from lightfer.timeline import SummaryBuilder

    builder = SummaryBuilder(classes) if classes is not None else None
    for r in results:  # streamed: nothing is kept per frame
        if builder is None:
            first = next((f for f in r.faces if f.probs), None)
            if first is None:
                continue  # frames before anyone appears add nothing to anyone's time
            builder = SummaryBuilder(tuple(first.probs))
        builder.add(r)
    return builder.finish()["persons"] if builder is not None else []
