"""Multi-face tracking and per-track temporal smoothing over video frames.

The tracker follows ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating
Every Detection Box", ECCV 2022), itself built on SORT (Bewley et al., "Simple Online and
Realtime Tracking", ICIP 2016):

* each track carries a constant-velocity Kalman filter over its box ``(cx, cy, w, h)`` with
  ByteTrack's height-proportional noise (in units of a nominal 30 fps frame, so that strides,
  ``--fps`` sampling and variable frame rates predict by the real elapsed time);
* association is Hungarian matching (``scipy.optimize.linear_sum_assignment``) on ``1 - IoU``
  between predicted track boxes and detections, first for high-score detections against all
  tracks, then for low-score detections against the remaining recently-seen tracks;
* when appearance vectors are given (one L2-normalised vector per detection), they add a cost
  term to the IoU stage (keeps identities through crossings) and a third stage re-attaches
  unmatched detections to lost tracks by appearance alone (a face that left the frame and came
  back within ``max_lost_s``);
* unmatched tracks are kept "lost" for ``max_lost_s`` seconds (at least 3 analysis intervals, so
  sparse sampling such as one frame every 2 s keeps its people), then removed; every detection
  that matches no track starts a new track, so every face of every frame has an ID.

:class:`ProbSmoother` smooths class probabilities per track: exponential moving average or the
mean over a window of the last analysed frames.

Why not a library: ``supervision``'s ByteTrack installs cleanly but pulls PyAV, requests and
three more packages, and returns only confirmed tracks (new faces would lose their timeline
rows); ``norfair`` downgrades numpy; ``boxmot`` pulls torchvision.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from lightfer.detection.box_utils import box_iou

log = logging.getLogger(__name__)

NOMINAL_FPS = 30.0  # Kalman steps are measured in frames of this rate
_STD_POS = 1.0 / 20  # ByteTrack's std_weight_position (relative to box size)
_STD_VEL = 1.0 / 160  # ByteTrack's std_weight_velocity


def _xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)])


class KalmanBoxFilter:
    """Constant-velocity Kalman filter over ``(cx, cy, w, h)``; state (8,) adds their velocities."""

    def __init__(self, box: np.ndarray) -> None:
        z = _xyxy_to_cxcywh(box)
        self.mean = np.concatenate([z, np.zeros(4)])  # (8,)
        w, h = z[2], z[3]
        std = [2 * _STD_POS * w, 2 * _STD_POS * h, 2 * _STD_POS * w, 2 * _STD_POS * h,
               10 * _STD_VEL * w, 10 * _STD_VEL * h, 10 * _STD_VEL * w, 10 * _STD_VEL * h]
        self.cov = np.diag(np.square(std))  # (8, 8)

    def predict(self, steps: float = 1.0) -> None:
        """Advance the state by ``steps`` nominal frames (may be fractional or large)."""
        if steps <= 0:
            return
        w, h = max(self.mean[2], 1e-3), max(self.mean[3], 1e-3)
        f = np.eye(8)
        f[:4, 4:] = steps * np.eye(4)
        q = np.square([_STD_POS * w, _STD_POS * h, _STD_POS * w, _STD_POS * h,
                       _STD_VEL * w, _STD_VEL * h, _STD_VEL * w, _STD_VEL * h]) * steps
        self.mean = f @ self.mean
        self.mean[2:4] = np.maximum(self.mean[2:4], 1.0)  # a box never shrinks to nothing
        self.cov = f @ self.cov @ f.T + np.diag(q)

    def update(self, box: np.ndarray) -> None:
        """Correct the state with a measured box (4,) x1, y1, x2, y2."""
        z = _xyxy_to_cxcywh(box)
        w, h = self.mean[2], self.mean[3]
        r = np.diag(np.square([_STD_POS * w, _STD_POS * h, _STD_POS * w, _STD_POS * h]))
        hm = np.eye(4, 8)
        s = hm @ self.cov @ hm.T + r  # (4, 4)
        k = np.linalg.solve(s, hm @ self.cov).T  # (8, 4) = P H^T S^-1 (S, P symmetric)
        self.mean = self.mean + k @ (z - hm @ self.mean)
        self.cov = (np.eye(8) - k @ hm) @ self.cov

    def box(self) -> np.ndarray:
        """Current box estimate (4,) x1, y1, x2, y2."""
        cx, cy, w, h = self.mean[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclass
class Track:
    """One tracked face."""

    track_id: int
    kf: KalmanBoxFilter
    last_seen: float  # timestamp (s) of the last matched detection
    feature: np.ndarray | None = None  # (D,) L2-normalised appearance, running average
    hits: int = 1  # matched detections so far
    missed: int = 0  # consecutive analysed frames without a match

    def add_feature(self, feature: np.ndarray | None, momentum: float = 0.8) -> None:
        """Fold a new appearance vector (D,) into the running average."""
        if feature is None:
            return
        f = feature if self.feature is None else momentum * self.feature + (1 - momentum) * feature
        self.feature = f / max(float(np.linalg.norm(f)), 1e-12)


@dataclass
class TrackerConfig:
    """Tracker thresholds; the defaults suit faces found by RetinaFace at 5-30 fps."""

    high_score: float = 0.6  # detections at or above: first association stage
    iou_threshold: float = 0.2  # smallest IoU accepted in the first stage
    low_iou_threshold: float = 0.4  # smallest IoU for low-score detections (second stage)
    max_lost_s: float = 2.0  # a track unseen for longer is removed
    appearance_weight: float = 0.5  # weight of (1 - cosine similarity) in the first-stage cost
    min_similarity: float = 0.3  # first stage: pairs less similar than this need IoU >= confident_iou
    confident_iou: float = 0.5  # an overlap this large is kept whatever the appearance (head turns)
    reid_similarity: float = 0.8  # third stage: lost track re-attached at this similarity or more


@dataclass
class FaceTracker:
    """ByteTrack-style multi-face tracker; call :meth:`update` once per analysed frame."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: list[Track] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)  # IDs removed by the last update
    _next_id: int = 1
    _last_time: float | None = None
    _interval: float | None = None  # running mean of the time between updates (s)
    _updates: int = 0

    def predicted_boxes(self) -> np.ndarray:
        """Boxes (T, 4) of the live tracks, as last predicted/updated."""
        return np.array([t.kf.box() for t in self.tracks]).reshape(-1, 4)

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray | None = None,
        *,
        timestamp: float | None = None,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """Associate this frame's detections with the tracks.

        Args:
            boxes: (N, 4) x1, y1, x2, y2 of this frame's faces.
            scores: (N,) detector scores (all treated as high when omitted).
            timestamp: seconds since the start; defaults to ``updates / 30``.
            features: optional (N, D) appearance vectors (L2-normalised here).
        Returns:
            (N,) int64 track IDs, one per input box, in input order; every box gets one.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n)
        if features is not None:
            features = np.asarray(features, dtype=np.float64).reshape(n, -1)
            features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        t = self._updates / NOMINAL_FPS if timestamp is None else float(timestamp)
        steps = 1.0 if self._last_time is None else max(t - self._last_time, 0.0) * NOMINAL_FPS
        if self._last_time is not None and t > self._last_time:
            dt = t - self._last_time
            self._interval = dt if self._interval is None else 0.9 * self._interval + 0.1 * dt
        self._last_time, self._updates = t, self._updates + 1
        for tr in self.tracks:
            tr.kf.predict(steps)

        ids = np.full(n, -1, dtype=np.int64)
        cfg = self.config
        high = [i for i in range(n) if scores[i] >= cfg.high_score]
        low = [i for i in range(n) if scores[i] < cfg.high_score]
        free = list(range(len(self.tracks)))
        # stage 1: high-score detections vs every live track (IoU + appearance)
        free, high = self._match(free, high, boxes, features, ids, t, cfg.iou_threshold, True)
        # stage 2: low-score detections vs tracks seen in the previous analysed frame (IoU only)
        recent = [k for k in free if self.tracks[k].missed == 0]
        left, low = self._match(recent, low, boxes, None, ids, t, cfg.low_iou_threshold, False)
        free = [k for k in free if k not in recent or k in left]
        unmatched = sorted(high + low)
        # stage 3: tracks no overlap explains (lost, or moved far) re-identified by appearance alone
        if features is not None and unmatched and free:
            free, unmatched = self._reid(free, unmatched, boxes, features, ids, t)
        for i in unmatched:  # every remaining face starts a track
            tr = Track(self._next_id, KalmanBoxFilter(boxes[i]), last_seen=t)
            tr.add_feature(None if features is None else features[i])
            self._next_id += 1
            self.tracks.append(tr)
            ids[i] = tr.track_id
        matched_ids = set(ids.tolist())
        self.removed_ids = []
        kept = []
        for tr in self.tracks:
            if tr.track_id not in matched_ids:
                tr.missed += 1
                tr.kf.mean[6:8] = 0.0  # a lost face keeps moving but stops growing/shrinking
            if t - tr.last_seen > max(cfg.max_lost_s, 3 * (self._interval or 0.0)):
                self.removed_ids.append(tr.track_id)
            else:
                kept.append(tr)
        self.tracks = kept
        return ids

    def _assign(self, tr: Track, box: np.ndarray, feature: np.ndarray | None, t: float) -> None:
        tr.kf.update(box)
        tr.add_feature(feature)
        tr.last_seen, tr.hits, tr.missed = t, tr.hits + 1, 0

    def _match(self, track_idx: list[int], det_idx: list[int], boxes: np.ndarray,
               features: np.ndarray | None, ids: np.ndarray, t: float, min_iou: float,
               use_appearance: bool) -> tuple[list[int], list[int]]:
        """Hungarian matching on IoU (+ appearance); returns the unmatched tracks and detections."""
        if not track_idx or not det_idx:
            return track_idx, det_idx
        pred = np.array([self.tracks[k].kf.box() for k in track_idx])
        iou = box_iou(pred, boxes[det_idx])  # (T, D)
        cost = 1.0 - iou
        gate = iou >= min_iou
        if use_appearance and features is not None:
            sim = self._similarity(track_idx, features[det_idx])
            if sim is not None:
                cost = cost + self.config.appearance_weight * (1.0 - sim)
                gate &= (sim >= self.config.min_similarity) | (iou >= self.config.confident_iou)
        rows, cols = linear_sum_assignment(np.where(gate, cost, 1e6))
        used_t, used_d = set(), set()
        for r, c in zip(rows, cols):
            if gate[r, c]:
                tr, i = self.tracks[track_idx[r]], det_idx[c]
                self._assign(tr, boxes[i], None if features is None else features[i], t)
                ids[i] = tr.track_id
                used_t.add(track_idx[r])
                used_d.add(i)
        return [k for k in track_idx if k not in used_t], [i for i in det_idx if i not in used_d]

    def _similarity(self, track_idx: list[int], feats: np.ndarray) -> np.ndarray | None:
        """Cosine similarity (T, D) of track features to detection features (1 where unknown)."""
        tf = [self.tracks[k].feature for k in track_idx]
        if all(f is None for f in tf):
            return None
        sim = np.ones((len(track_idx), len(feats)))
        for r, f in enumerate(tf):
            if f is not None and f.shape[0] == feats.shape[1]:
                sim[r] = feats @ f
        return sim

    def _reid(self, track_idx: list[int], det_idx: list[int], boxes: np.ndarray,
              features: np.ndarray, ids: np.ndarray, t: float) -> tuple[list[int], list[int]]:
        lost = [k for k in track_idx if self.tracks[k].feature is not None]  # unmatched by overlap this frame
        if not lost:
            return track_idx, det_idx
        sim = self._similarity(lost, features[det_idx])
        assert sim is not None
        rows, cols = linear_sum_assignment(-sim)
        used_t, used_d = set(), set()
        for r, c in zip(rows, cols):
            if sim[r, c] >= self.config.reid_similarity:
                tr, i = self.tracks[lost[r]], det_idx[c]
                tr.kf = KalmanBoxFilter(boxes[i])  # the old motion says nothing about the re-entry
                self._assign(tr, boxes[i], features[i], t)
                ids[i] = tr.track_id
                used_t.add(lost[r])
                used_d.add(i)
                log.debug("re-identified track %d (similarity %.2f)", tr.track_id, sim[r, c])
        return [k for k in track_idx if k not in used_t], [i for i in det_idx if i not in used_d]


SMOOTHING_METHODS = ("ema", "window", "none")


class ProbSmoother:
    """Per-track smoothing of class probabilities (C,): EMA, window mean, or none.

    ``ema``: ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}`` (``s_0 = p_0``), per analysed frame.
    ``window``: mean of the last ``window`` analysed frames of the track.
    State is dropped with :meth:`forget` when the tracker removes a track (bounded memory).
    """

    def __init__(self, method: str = "ema", *, alpha: float = 0.3, window: int = 5) -> None:
        if method not in SMOOTHING_METHODS:
            raise ValueError(f"smoothing must be one of {SMOOTHING_METHODS}, got {method!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        if window < 1:
            raise ValueError(f"smoothing window must be >= 1, got {window}")
        self.method, self.alpha, self.window = method, float(alpha), int(window)
        self._state: dict[int, np.ndarray | deque] = {}

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        """Fold this frame's probabilities (C,) into the track's state; returns the smoothed (C,)."""
        p = np.asarray(probs, dtype=np.float64)
        if self.method == "none":
            return p.copy()
        if self.method == "ema":
            prev = self._state.get(track_id)
            s = p.copy() if prev is None or prev.shape != p.shape else self.alpha * p + (1 - self.alpha) * prev
            self._state[track_id] = s
            return s.copy()
        buf = self._state.setdefault(track_id, deque(maxlen=self.window))
        if buf and buf[-1].shape != p.shape:
            buf.clear()
        buf.append(p)
        return np.mean(np.stack(buf), axis=0)

    def forget(self, track_ids: list[int]) -> None:
        """Drop the state of removed tracks."""
        for tid in track_ids:
            self._state.pop(tid, None)

    def __len__(self) -> int:
        return len(self._state)
