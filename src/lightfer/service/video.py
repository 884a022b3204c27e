"""``POST /v1/analyze/video``: a short uploaded clip to a per-frame timeline and a per-person summary.

Frames come from :func:`lightfer.video.stream` (decoding, tracking and smoothing live there) and the
per-person summary from :func:`lightfer.video.summarize_tracks`, as for ``lightfer predict clip.mp4
--summary``; this module only bounds the work (duration, frame count, deadline) and shapes the answer.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightfer.service.config import ServiceConfig
from lightfer.service.engine import AnalyzeOptions, LoadedModel, ServiceError
from lightfer.service.inputs import probe_video
from lightfer.structures import FrameResult

log = logging.getLogger(__name__)


def analyze_clip(
    model: LoadedModel,
    path: str,
    source: str,
    config: ServiceConfig,
    options: AnalyzeOptions,
    *,
    stride: int | None = None,
    fps: float | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Analyse the clip at ``path``.

    Returns ``{source, fps, frame_count, duration_s, stride, sample_fps, frames_analysed, timeline,
    people}``: ``timeline`` holds one FrameResult JSON per analysed frame, ``people`` one summary per track.

    ``fps`` samples by the container's timestamps (variable frame rates included). The stride is
    raised (and ``fps`` dropped) so that at most ``config.max_video_frames`` frames are analysed.
    """
    src_fps, count, duration = probe_video(path, config, source)
    step = max(1, int(stride or 1))
    expected = math.ceil(count / step) if count > 0 else 0
    if fps:
        expected = min(expected, math.ceil(duration * fps) + 1)
    if expected > config.max_video_frames:  # spread the frame budget over the whole clip
        step = math.ceil(count / config.max_video_frames)
        fps = None
    from lightfer.video import VideoReadError, stream, summarize_tracks

    def collect(analyzer: Any) -> list[FrameResult]:
        results: list[FrameResult] = []
        for result in stream(analyzer, path, stride=step, fps=fps):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("video analysis passed its deadline")
            if result.timestamp is not None and result.timestamp > config.max_video_seconds:
                raise ServiceError(413, f"{source}: clip longer than {config.max_video_seconds:g} s")
            results.append(result)
            if len(results) >= config.max_video_frames:
                break
        return results

    try:
        results = model.run(collect, options, deadline)
    except VideoReadError as exc:
        raise ServiceError(400, f"{source}: {exc}") from exc
    for r in results:
        r.source = source
    return {
        "source": source,
        "fps": round(src_fps, 3),
        "frame_count": count,
        "duration_s": round(duration, 3),
        "stride": step,
        "sample_fps": fps,
        "frames_analysed": len(results),
        "timeline": [r.to_dict() for r in results],
        "people": summarize_tracks(results, model.classes or None),
    }
