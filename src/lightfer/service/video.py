"""``POST /v1/analyze/video``: a short uploaded clip to a per-frame timeline and a per-person summary.

Frames come from :func:`lightfer.video.stream` (decoding, tracking and smoothing live there); this
module only bounds the work (duration, frame count, deadline) and shapes the JSON answer.
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
    """Analyse the clip at ``path``; returns ``{source, fps, frame_count, duration_s, stride, timeline, people}``.

    The stride is raised so that at most ``config.max_video_frames`` frames are analysed.
    """
    src_fps, count, duration = probe_video(path, config, source)
    step = max(1, int(stride or 1), round(src_fps / fps) if fps else 1)
    if count > 0 and math.ceil(count / step) > config.max_video_frames:
        step = math.ceil(count / config.max_video_frames)
    from lightfer.video import VideoReadError, stream

    def collect(analyzer: Any) -> list[FrameResult]:
        results: list[FrameResult] = []
        for result in stream(analyzer, path, stride=step):
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
        "frames_analysed": len(results),
        "timeline": [r.to_dict() for r in results],
        "people": summarize(results, src_fps / step if src_fps else None),
    }


def summarize(results: list[FrameResult], analysed_fps: float | None) -> list[dict[str, Any]]:
    """Per-track summary: frames seen, time on screen, dominant expression and share of each label.

    Uses :func:`lightfer.video.summarize_tracks` when present, so the service and the CLI agree.
    """
    try:
        from lightfer.video import summarize_tracks  # type: ignore[attr-defined]
    except ImportError:
        summarize_tracks = None
    if summarize_tracks is not None:
        return summarize_tracks(results)
    tracks: dict[int, dict[str, Any]] = {}
    for r in results:
        for face in r.faces:
            if face.track_id is None:
                continue
            t = tracks.setdefault(face.track_id, {"frames": 0, "first": r.timestamp, "last": r.timestamp, "labels": {}})
            t["frames"] += 1
            t["last"] = r.timestamp
            probs = face.smoothed_probs or face.probs
            label = max(probs, key=probs.get) if probs else face.label
            if label:
                t["labels"][label] = t["labels"].get(label, 0) + 1
    people = []
    for track_id, t in sorted(tracks.items()):
        n = t["frames"]
        shares = {k: round(v / n, 4) for k, v in sorted(t["labels"].items(), key=lambda kv: -kv[1])}
        people.append({
            "track_id": track_id,
            "frames": n,
            "seconds_on_screen": round(n / analysed_fps, 3) if analysed_fps else None,
            "first_seen_s": t["first"],
            "last_seen_s": t["last"],
            "dominant_expression": next(iter(shares), None),
            "expression_share": shares,
        })
    return people
