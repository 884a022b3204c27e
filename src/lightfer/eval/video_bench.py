"""End-to-end video throughput (decode + detect + align + classify + track + smooth), and synthetic clips.

:func:`write_clip` paints face pictures moving along given paths onto a background and writes
them with OpenCV: the test videos (crossings, exits and re-entries, empty stretches) and the
benchmark clip (640x480, four faces from :mod:`lightfer.examples`' public-domain photos).
Each thread count is measured in its own subprocess (torch threads are set once per process).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from lightfer.defaults import DEFAULT_MODEL

Trajectory = Callable[[int], "tuple[int, int] | None"]  # frame index -> top-left corner, None = not in the frame


@dataclass
class Actor:
    """A face picture and where it is in each frame."""

    tile: np.ndarray  # RGB uint8 (h, w, 3), face in the middle
    path: Trajectory


def face_tile(photo: np.ndarray, box: Sequence[float], size: int, margin: float = 1.7) -> np.ndarray:
    """Square RGB tile ``(size, size, 3)`` centred on ``box`` (x1, y1, x2, y2) of ``photo``, side ``margin`` x box."""
    x1, y1, x2, y2 = box
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * margin
    s = size / side
    m = np.float32([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
    return cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def background(size: tuple[int, int]) -> np.ndarray:
    """A smooth colour gradient ``(H, W, 3)`` (no face-like texture)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([90 + 60 * xx / w, 110 + 40 * yy / h, 140 + 50 * (1 - yy / h)], axis=-1).astype(np.uint8)


def render(actors: Sequence[Actor], index: int, size: tuple[int, int], bg: np.ndarray | None = None) -> np.ndarray:
    """Frame ``index`` as RGB uint8 ``(H, W, 3)``; later actors are painted over earlier ones."""
    w, h = size
    frame = (background(size) if bg is None else bg).copy()
    for a in actors:
        at = a.path(index)
        if at is None:
            continue
        x, y = int(at[0]), int(at[1])
        th, tw = a.tile.shape[:2]
        fx1, fy1, fx2, fy2 = max(x, 0), max(y, 0), min(x + tw, w), min(y + th, h)
        if fx2 > fx1 and fy2 > fy1:
            frame[fy1:fy2, fx1:fx2] = a.tile[fy1 - y: fy2 - y, fx1 - x: fx2 - x]
    return frame


def write_clip(path: str | os.PathLike, actors: Sequence[Actor], *, n_frames: int, size: tuple[int, int] = (640, 480),
               fps: float = 25.0, fourcc: str | None = None) -> Path:
    """Write ``n_frames`` frames of ``actors`` to ``path`` (mp4v for .mp4, MJPG for .avi); returns the path."""
    path = Path(path)
    code = fourcc or ("MJPG" if path.suffix.lower() == ".avi" else "mp4v")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write video with codec {code}")
    bg = background(size)
    try:
        for i in range(n_frames):
            writer.write(cv2.cvtColor(render(actors, i, size, bg), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def benchmark_actors(size: tuple[int, int] = (640, 480)) -> list[Actor]:
    """Four faces (the example photos, one mirrored, one grayscale) drifting slowly in their quarters."""
    from lightfer.examples import source_photos

    photos = source_photos()
    astro, portrait = photos["astronaut"], photos["portrait"]
    w, h = size
    t = int(min(w, h) * 0.36)
    tiles = [
        face_tile(astro, (177, 56, 270, 176), t),
        face_tile(portrait, (83, 76, 177, 194), t),
        np.ascontiguousarray(face_tile(astro, (177, 56, 270, 176), t)[:, ::-1]),
        np.repeat(cv2.cvtColor(face_tile(portrait, (83, 76, 177, 194), t), cv2.COLOR_RGB2GRAY)[..., None], 3, 2),
    ]
    corners = [(w * 0.05, h * 0.05), (w * 0.55, h * 0.05), (w * 0.05, h * 0.5), (w * 0.55, h * 0.5)]

    def drift(x0: float, y0: float, k: int) -> Trajectory:
        return lambda i: (x0 + 20 * np.sin(i / 15 + k), y0 + 10 * np.cos(i / 20 + k))

    return [Actor(tile, drift(x, y, k)) for k, (tile, (x, y)) in enumerate(zip(tiles, corners))]


def measure(clip: Path, threads: int, model: str, backend: str, warmup: int = 5) -> dict[str, Any]:
    """Run in a fresh process: stream the whole clip once after a warm-up; frames/s end to end."""
    import torch

    torch.set_num_threads(threads)
    from lightfer.pipeline import Analyzer
    from lightfer.video import VideoSource, iter_video

    analyzer = Analyzer(model, backend=backend, threads=threads)
    for _, r in zip(range(warmup), analyzer.stream(str(clip))):
        pass
    frames = faces = 0
    stages: dict[str, float] = {}
    src = VideoSource(str(clip))
    c0, t0 = time.process_time(), time.perf_counter()
    for _, result in iter_video(analyzer, src):
        frames += 1
        faces += len(result.faces)
        for k, v in result.timings.items():
            stages[k] = stages.get(k, 0.0) + v
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"threads": threads, "backend": backend, "frames": frames, "faces_per_frame": faces / max(frames, 1),
            "seconds": elapsed, "fps": frames / elapsed, "size": list(src.size),
            "cpu_ms_per_frame": cpu / max(frames, 1) * 1e3,  # all threads; on a busy machine 1000/this (1 thread)
            "ms_per_frame": {k: v / max(frames, 1) for k, v in stages.items()}}


def run_video_benchmark(threads: Sequence[int] = (1, 2), *, n_frames: int = 150, model: str = DEFAULT_MODEL,
                        backends: Sequence[str] = ("onnx",), clip: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """End-to-end frames/s on ``clip`` (default: a synthetic 640x480 four-face clip), per backend and thread count."""
    tmp = None
    if clip is None:
        tmp = tempfile.TemporaryDirectory()
        clip = write_clip(Path(tmp.name) / "bench.mp4", benchmark_actors(), n_frames=n_frames, fps=25.0)
    rows = []
    try:
        for backend in backends:
            for n in threads:
                cmd = [sys.executable, "-m", "lightfer.eval.video_bench", "--clip", str(clip), "--threads", str(n),
                       "--model", model, "--backends", backend]
                env = {**os.environ, "OMP_NUM_THREADS": str(n)}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise RuntimeError(f"video benchmark worker failed ({backend}, {n} threads):\n{proc.stderr[-3000:]}")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows


def format_video_table(rows: list[dict[str, Any]]) -> str:
    """Readable table: threads, frames/s, faces per frame, ms per stage."""
    stages = [k for k in ("detect", "align", "classify", "track") if k in rows[0]["ms_per_frame"]]
    w, h = rows[0]["size"]
    lines = [f"video: {w}x{h}, {rows[0]['frames']} frames, {rows[0]['faces_per_frame']:.1f} faces/frame; "
             "end to end (decode + detect + align + classify + track + smooth), one pass after warm-up",
             f"{'backend':8s} {'threads':>7s} {'frames/s':>9s} {'cpu ms/frame':>12s} "
             + " ".join(f"{s + ' ms':>12s}" for s in stages)]
    for r in rows:
        lines.append(f"{r['backend']:8s} {r['threads']:7d} {r['fps']:9.1f} {r['cpu_ms_per_frame']:12.1f} "
                     + " ".join(f"{r['ms_per_frame'][s]:12.2f}" for s in stages))
    return "\n".join(lines)


def run_cli(clip: str | None, threads: Sequence[int], backends: Sequence[str], model: str,
            json_path: str | None = None, n_frames: int = 150) -> int:
    """``lightfer benchmark --video [CLIP]``: print the table (and write JSON); returns the exit code."""
    from lightfer.eval.benchmark import machine_info

    if clip is not None and not Path(clip).is_file():
        print(f"error: {clip}: no such video file", file=sys.stderr)
        return 1
    rows = run_video_benchmark(threads, n_frames=n_frames, model=model, backends=backends, clip=clip)
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, onnxruntime {info['onnxruntime']}")
    print(format_video_table(rows))
    if json_path:
        Path(json_path).write_text(json.dumps({"machine": info, "clip": clip or "synthetic", "rows": rows}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Worker entry (``--clip``) used by :func:`run_video_benchmark`; without ``--clip`` runs the benchmark."""
    ap = argparse.ArgumentParser(description="end-to-end video frames/s")
    ap.add_argument("--clip", help="video to measure in this process (worker mode)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--backends", nargs="+", default=["onnx"])
    ap.add_argument("--frames", type=int, default=150, help="length of the synthetic clip")
    a = ap.parse_args(argv)
    if a.clip:
        print(json.dumps(measure(Path(a.clip), a.threads[0], a.model, a.backends[0])))
        return 0
    return run_cli(None, a.threads, a.backends, a.model, n_frames=a.frames)


if __name__ == "__main__":
    sys.exit(main())
