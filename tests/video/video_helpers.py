"""Helpers for the video tests: clip surgery (variable frame rate, corrupt frames) and a model-free analyzer.

A module of its own (not conftest) so that ``from video_helpers import ...`` cannot pick up another
directory's conftest.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from lightfer.structures import Face, FrameResult

TILE = 84  # px side of the face tiles; the face inside is about 50 px


def set_mp4_frame_durations(path: Path, entries: list[tuple[int, int]]) -> None:
    """Rewrite the time-to-sample table (``stts``) of an OpenCV-written mp4: a variable frame rate.

    ``entries`` are (sample count, duration in media time units); the total duration must stay
    the one OpenCV wrote, and the counts must add up to the frame count.
    """
    data = bytearray(path.read_bytes())
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}

    def find(start: int, end: int, parents: list[int]) -> list[int] | None:
        i = start
        while i < end:
            size, kind = struct.unpack(">I4s", data[i:i + 8])
            if kind == b"stts":
                return parents + [i]
            if kind in containers and (hit := find(i + 8, i + size, parents + [i])):
                return hit
            i += size
        return None

    chain = find(0, len(data), [])
    assert chain, f"{path}: no stts box"
    at = chain[-1]
    old_size, (_, n) = struct.unpack(">I", data[at:at + 4])[0], struct.unpack(">II", data[at + 8:at + 16])
    old = [struct.unpack(">II", data[at + 16 + 8 * k:at + 24 + 8 * k]) for k in range(n)]
    assert sum(c for c, _ in old) == sum(c for c, _ in entries)
    assert sum(c * d for c, d in old) == sum(c * d for c, d in entries)
    body = struct.pack(">II", 0, len(entries)) + b"".join(struct.pack(">II", c, d) for c, d in entries)
    box = struct.pack(">I4s", 8 + len(body), b"stts") + body
    data[at:at + old_size] = box
    for parent in chain[:-1]:  # moov is written after mdat, so no chunk offset moves
        size = struct.unpack(">I", data[parent:parent + 4])[0]
        data[parent:parent + 4] = struct.pack(">I", size + len(box) - old_size)
    path.write_bytes(bytes(data))


def mp4_stts(path: Path) -> list[tuple[int, int]]:
    """The (count, duration) entries of the first stts box."""
    data = path.read_bytes()
    at = data.find(b"stts") - 4
    n = struct.unpack(">I", data[at + 12:at + 16])[0]
    return [struct.unpack(">II", data[at + 16 + 8 * k:at + 24 + 8 * k]) for k in range(n)]


def corrupt_avi_frame(path: Path, index: int) -> None:
    """Overwrite the JPEG payload of frame ``index`` of an MJPG .avi with noise (undecodable)."""
    data = bytearray(path.read_bytes())
    movi = data.find(b"movi")
    starts, i = [], movi
    while (i := data.find(b"00dc", i + 1)) != -1:
        starts.append(i)
    at = starts[index]
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    assert data[at + 8:at + 10] == b"\xff\xd8", "not a JPEG chunk"
    data[at + 8:at + 8 + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


class ScriptedAnalyzer:
    """Model-free stand-in for :class:`lightfer.Analyzer`: faces come from ``script(frame_no)``.

    ``script`` returns a list of (box, probs) per call; calls count analysed frames.
    """

    classes = ("angry", "happy", "neutral")

    def __init__(self, script, raise_at: int | None = None) -> None:
        self.script, self.calls, self.raise_at = script, 0, raise_at
        self.detector = self

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if self.raise_at is not None and self.calls == self.raise_at:
            raise KeyboardInterrupt
        faces = []
        for box, probs in self.script(self.calls):
            x1, y1, x2, y2 = box
            lm = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
                           [(x1 + x2) / 2, y1 + 0.6 * (y2 - y1)], [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
                           [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)]], dtype=np.float32)
            f = Face(box=np.array(box, dtype=np.float32), score=0.9, landmarks=lm)
            f.probs = dict(zip(self.classes, probs))
            faces.append(f)
        self.calls += 1
        return faces

    def analyze_array(self, rgb: np.ndarray, *, source: str | None = None, faces: list[Face] | None = None) -> FrameResult:
        for f in faces:
            f.label = max(f.probs, key=f.probs.get)
        return FrameResult(faces=faces, image_size=(rgb.shape[1], rgb.shape[0]), source=source)
