"""Video outputs: CSV/JSONL timelines, per-person summaries (JSON and timeline plots), annotated video.

Everything here is incremental and bounded in memory: writers stream rows to disk, the summary
keeps a few numbers per person and a decimated probability series (at most ``max_points`` per
person, pairs merged when full) for the plots, so an hour of video costs what a minute does.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from lightfer.structures import Face, FrameResult

log = logging.getLogger(__name__)

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def smoothed_top(face: Face) -> tuple[str | None, float]:
    """(label, probability) of the smoothed probabilities (the raw ones when not smoothed)."""
    probs = face.smoothed_probs or face.probs
    if not probs:
        return face.label, 0.0
    label = max(probs, key=probs.get)
    return label, float(probs[label])


def timeline_columns(classes: Sequence[str]) -> list[str]:
    """CSV header: frame, time, track, box, score, landmarks, smoothed and raw label, probabilities."""
    cols = ["frame_index", "timestamp", "track_id", "x1", "y1", "x2", "y2", "score"]
    cols += [f"lm{i}_{a}" for i in range(5) for a in "xy"]
    cols += ["label", "confidence", "raw_label", "raw_confidence"]
    cols += [f"p_{c}" for c in classes] + [f"smoothed_{c}" for c in classes]
    return cols


class TimelineWriter:
    """Streams results to ``.csv`` (one row per face per analysed frame) or ``.jsonl`` (one line per analysed frame).

    In both, ``label``/``confidence`` are the smoothed ones; raw probabilities are kept alongside.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], fmt: str | None = None) -> None:
        self.path = Path(path)
        self.fmt = fmt or self.path.suffix.lower().lstrip(".")
        if self.fmt not in ("csv", "jsonl"):
            raise ValueError(f"{self.path}: timeline format must be csv or jsonl, got {self.fmt!r}")
        self.classes = tuple(classes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self.rows = 0
        if self.fmt == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(timeline_columns(self.classes))

    def write(self, result: FrameResult) -> None:
        """Append one analysed frame."""
        if self.fmt == "jsonl":
            d = result.to_dict()
            for face, fd in zip(result.faces, d["faces"]):
                label, conf = smoothed_top(face)
                fd["smoothed_label"], fd["smoothed_confidence"] = label, round(conf, 4)
            self._file.write(json.dumps(d) + "\n")
            self.rows += 1
            return
        for face in result.faces:
            label, conf = smoothed_top(face)
            sm = face.smoothed_probs or face.probs
            row: list[Any] = [result.frame_index, _r(result.timestamp, 4), face.track_id]
            row += [_r(v, 1) for v in face.box] + [_r(face.score, 4)]
            row += [_r(v, 1) for v in np.asarray(face.landmarks).reshape(-1)]
            row += [label, _r(conf, 4), face.label, _r(face.confidence, 4)]
            row += [_r(face.probs.get(c, 0.0), 4) for c in self.classes]
            row += [_r(sm.get(c, 0.0), 4) for c in self.classes]
            self._csv.writerow(row)
            self.rows += 1

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if not self._file.closed:
            self._file.close()


def _r(v: float | None, nd: int) -> float | str:
    return "" if v is None else round(float(v), nd)


class _Series:
    """Decimating (time, probs) series: at most ``max_points`` points, each the mean of ``bin`` frames."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max(2, max_points)
        self.t: list[float] = []
        self.p: list[np.ndarray] = []
        self.bin = 1
        self._acc: list[Any] = [0.0, 0.0, 0]

    def add(self, t: float, p: np.ndarray) -> None:
        acc = self._acc
        acc[0] += t
        acc[1] = acc[1] + p
        acc[2] += 1
        if acc[2] == self.bin:
            self.t.append(acc[0] / acc[2])
            self.p.append(acc[1] / acc[2])
            self._acc = [0.0, 0.0, 0]
            if len(self.t) >= self.max_points:  # merge neighbours: half the points, twice the bin
                n = len(self.t) // 2 * 2
                self.t = [(a + b) / 2 for a, b in zip(self.t[:n:2], self.t[1:n:2])] + self.t[n:]
                self.p = [(a + b) / 2 for a, b in zip(self.p[:n:2], self.p[1:n:2])] + self.p[n:]
                self.bin *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        t, p = list(self.t), list(self.p)
        if self._acc[2]:
            t.append(self._acc[0] / self._acc[2])
            p.append(self._acc[1] / self._acc[2])
        return np.array(t), np.array(p).reshape(len(t), -1)


@dataclass
class _Person:
    first_seen: float
    last_seen: float
    frames: int = 0
    seconds: float = 0.0
    label_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prob_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    series: _Series | None = None


class SummaryBuilder:
    """Per-person (per-track) summary: time on screen, dominant expression, share of each.

    Time is credited per analysed frame: a face present at time t is on screen until the next
    analysed frame (the last frame counts one typical interval), so strides and variable frame
    rates weigh correctly. Shares are of that time, by the smoothed label.
    """

    def __init__(self, classes: Sequence[str], *, max_points: int = 2000, source: str | None = None) -> None:
        self.classes = tuple(classes)
        self.source = source
        self.persons: dict[int, _Person] = {}
        self.max_points = max_points
        self.frames_analysed = 0
        self.faces = 0
        self._prev: tuple[float, dict[int, int]] | None = None  # (time, track -> label index)
        self._last_dt: float | None = None
        self._first_t: float | None = None

    def add(self, result: FrameResult) -> None:
        """Fold in one analysed frame (faces need ``track_id``)."""
        t = float(result.timestamp or 0.0)
        self._credit(t)
        self.frames_analysed += 1
        self._first_t = t if self._first_t is None else self._first_t
        present: dict[int, int] = {}
        for face in result.faces:
            if face.track_id is None:
                continue
            self.faces += 1
            sm = face.smoothed_probs or face.probs
            p = np.array([sm.get(c, 0.0) for c in self.classes])
            person = self.persons.get(face.track_id)
            if person is None:
                person = self.persons[face.track_id] = _Person(
                    t, t, label_seconds=np.zeros(len(self.classes)), prob_sum=np.zeros(len(self.classes)),
                    series=_Series(self.max_points))
            person.last_seen, person.frames = t, person.frames + 1
            person.prob_sum += p
            person.series.add(t, p)
            present[face.track_id] = int(np.argmax(p))
        self._prev = (t, present)

    def _credit(self, t: float | None) -> None:
        if self._prev is None:
            return
        t0, present = self._prev
        dt = (t - t0) if t is not None else (self._last_dt or 0.0)
        if dt <= 0:
            return
        if t is not None:
            self._last_dt = dt
        for tid, k in present.items():
            self.persons[tid].seconds += dt
            self.persons[tid].label_seconds[k] += dt

    def finish(self, **extra: Any) -> dict[str, Any]:
        """The summary dict (JSON-ready); credits the last frame. Call once, at the end."""
        self._credit(None)
        self._prev = None
        persons = []
        for tid in sorted(self.persons):
            ps = self.persons[tid]
            total = ps.label_seconds.sum()
            share = ps.label_seconds / total if total > 0 else ps.prob_sum / max(ps.prob_sum.sum(), 1e-12)
            mean = ps.prob_sum / max(ps.frames, 1)
            persons.append({
                "track_id": tid,
                "first_seen": round(ps.first_seen, 3),
                "last_seen": round(ps.last_seen, 3),
                "time_on_screen": round(ps.seconds, 3),
                "frames": ps.frames,
                "dominant_expression": self.classes[int(np.argmax(share))] if len(self.classes) else None,
                "expression_share": {c: round(float(v), 4) for c, v in zip(self.classes, share)},
                "mean_probs": {c: round(float(v), 4) for c, v in zip(self.classes, mean)},
            })
        return {"source": self.source, "classes": list(self.classes), "frames_analysed": self.frames_analysed,
                "faces": self.faces, **extra, "persons": persons}


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (a partial file never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def plot_timelines(summary: SummaryBuilder, out_dir: str | os.PathLike, *, dpi: int = 100) -> list[Path]:
    """One PNG per person: smoothed probabilities over time (stacked) and the label strip."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from lightfer.draw import color_for

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = [np.array(color_for(c)) / 255 for c in summary.classes]
    paths = []
    for tid in sorted(summary.persons):
        t, p = summary.persons[tid].series.arrays()
        if len(t) == 0:
            continue
        fig, (ax_strip, ax) = plt.subplots(2, 1, figsize=(8, 3.2), sharex=True,
                                           gridspec_kw={"height_ratios": [1, 5]})
        if len(t) == 1:  # a single point: draw it as a short bar
            t, p = np.array([t[0], t[0] + 1e-2]), np.repeat(p, 2, axis=0)
        ax.stackplot(t, p.T, colors=colors, labels=summary.classes, linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_xlim(t[0], t[-1])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("probability")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        strip = np.array([colors[k] for k in p.argmax(1)])[None]  # (1, T, 3)
        ax_strip.imshow(strip, aspect="auto", extent=(t[0], t[-1], 0, 1), interpolation="nearest")
        ax_strip.set_yticks([])
        ps = summary.persons[tid]
        share = ps.label_seconds / max(ps.label_seconds.sum(), 1e-12)
        k = int(np.argmax(share))
        ax_strip.set_title(f"person #{tid}: {ps.seconds:.1f} s on screen, mostly {summary.classes[k]} "
                           f"({share[k] * 100:.0f}%)", fontsize=9)
        fig.tight_layout()
        path = out / f"person_{tid:03d}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(path)
    return paths


class AnnotatedVideoWriter:
    """Writes annotated frames (boxes, track IDs, smoothed label + confidence) at a fixed rate and size."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        fourcc = VIDEO_FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise ValueError(f"{self.path}: annotated video must end in one of {sorted(VIDEO_FOURCC)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(size[0]), int(size[1]))  # (width, height)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size)
        if not self._writer.isOpened():
            raise OSError(f"{self.path}: cannot write video (codec {fourcc} unavailable in this OpenCV?)")
        self.frames = 0

    def write(self, rgb: np.ndarray, faces: Sequence[Face] | FrameResult | None) -> None:
        """Draw ``faces`` on the RGB uint8 frame ``(H, W, 3)`` and append it."""
        from lightfer.draw import annotate

        if isinstance(faces, FrameResult):
            faces = faces.faces
        out = annotate(rgb, list(faces)) if faces else rgb
        if (out.shape[1], out.shape[0]) != self.size:
            out = cv2.resize(out, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (writes the container index; idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
