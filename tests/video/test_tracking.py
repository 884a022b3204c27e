"""Tracker and smoother on synthetic boxes: no model, no video, fast."""
from __future__ import annotations

import numpy as np
import pytest

from lightfer.detection.box_utils import box_iou as iou_matrix
from lightfer.tracking import FaceTracker, ProbSmoother, TrackerConfig


def box_at(cx: float, cy: float, size: float = 60.0) -> np.ndarray:
    return np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[1], 0.0)  # degenerate box: no division by zero
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_every_face_gets_a_distinct_id_each_frame() -> None:
    rng = np.random.default_rng(0)
    tracker = FaceTracker()
    for f in range(40):
        n = int(rng.integers(0, 6))
        boxes = np.array([box_at(*rng.uniform(30, 600, 2), size=rng.uniform(20, 80)) for _ in range(n)])
        ids = tracker.update(boxes.reshape(-1, 4), rng.uniform(0.3, 1.0, n), timestamp=f / 25)
        assert ids.shape == (n,) and (ids > 0).all()
        assert len(set(ids.tolist())) == n


def crossing_run(with_features: bool, occlude: bool) -> list[tuple[int, int]]:
    """A walks right, B walks left on the same row; B is hidden behind A near the middle."""
    tracker = FaceTracker()
    rng = np.random.default_rng(1)
    fa, fb = rng.normal(size=16), rng.normal(size=16)
    out = []
    for f in range(60):
        xa, xb = 60 + 8 * f, 540 - 8 * f
        boxes, feats, who = [box_at(xa, 200)], [fa], ["A"]
        if not (occlude and abs(xa - xb) < 50):
            boxes.append(box_at(xb, 205))
            feats.append(fb)
            who.append("B")
        order = rng.permutation(len(boxes))  # detector order carries no identity
        feats_arr = np.array(feats)[order] + 0.05 * rng.normal(size=(len(order), 16))
        ids = tracker.update(np.array(boxes)[order], timestamp=f / 30,
                             features=feats_arr if with_features else None)
        got = dict(zip([who[i] for i in order], ids.tolist()))
        out.append((got["A"], got.get("B", -1)))
    return out


@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("occlude", [False, True])
def test_ids_survive_a_crossing(with_features: bool, occlude: bool) -> None:
    run = crossing_run(with_features, occlude)
    a0, b0 = run[0]
    assert a0 != b0
    assert all(a == a0 for a, _ in run), "A's ID changed"
    assert all(b in (b0, -1) for _, b in run), "B's ID changed"
    if occlude:
        assert any(b == -1 for _, b in run)  # B really was hidden for a while


def test_missed_detections_keep_the_id_and_long_absence_ends_it() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=0.5))
    ids = [tracker.update(box_at(100 + 3 * f, 100)[None], timestamp=f / 30)[0] for f in range(10)]
    assert len(set(ids)) == 1
    for f in range(10, 16):  # 6 frames (0.2 s) without a detection
        assert tracker.update(np.zeros((0, 4)), timestamp=f / 30).size == 0
    again = tracker.update(box_at(100 + 3 * 16, 100)[None], timestamp=16 / 30)[0]
    assert again == ids[0]
    for f in range(17, 40):  # 0.77 s > max_lost_s: the track is removed
        tracker.update(np.zeros((0, 4)), timestamp=f / 30)
    assert tracker.tracks == []
    later = tracker.update(box_at(100 + 3 * 40, 100)[None], timestamp=40 / 30)[0]
    assert later != ids[0]


def test_removed_ids_are_reported_once() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=0.1))
    tid = tracker.update(box_at(50, 50)[None], timestamp=0.0)[0]
    removed = []
    for f in range(1, 10):
        tracker.update(np.zeros((0, 4)), timestamp=f / 30)
        removed += tracker.removed_ids
    assert removed == [tid]


def test_prediction_uses_elapsed_time_with_irregular_sampling() -> None:
    """200 px/s; samples 1/30 s apart, then a 0.5 s gap: the face moved 100 px > its width."""
    times = [f / 30 for f in range(10)] + [10 / 30 + 0.5, 10 / 30 + 0.5 + 1 / 30]
    tracker = FaceTracker()
    ids = [tracker.update(box_at(50 + 200 * t, 100, size=40)[None], timestamp=t)[0] for t in times]
    assert len(set(ids)) == 1


def test_reentry_is_reidentified_by_appearance_only() -> None:
    """The face leaves on the right and comes back on the left: IoU cannot link it, features can."""
    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=32), rng.normal(size=32)
    tracker = FaceTracker()
    first = tracker.update(np.array([box_at(500, 100), box_at(100, 300)]), timestamp=0.0,
                           features=np.stack([fa, fb]))
    tracker.update(box_at(100, 300)[None], timestamp=0.3, features=fb[None])
    back = tracker.update(np.array([box_at(104, 302), box_at(40, 100)]), timestamp=0.6,
                          features=np.stack([fb, fa + 0.1 * rng.normal(size=32)]))
    assert back.tolist() == first[::-1].tolist()
    # a stranger appearing elsewhere gets a new ID; A turning its head (new look, same place) keeps its own
    stranger, turned = tracker.update(np.array([box_at(300, 300), box_at(42, 101)]), timestamp=0.63,
                                      features=rng.normal(size=(2, 32)))
    assert stranger not in first.tolist() and turned == first[0]


def test_ema_and_window_known_answers() -> None:
    p1, p2, p3 = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5])
    ema = ProbSmoother("ema", alpha=0.25)
    np.testing.assert_allclose(ema.update(7, p1), p1)
    np.testing.assert_allclose(ema.update(7, p2), [0.75, 0.25])
    np.testing.assert_allclose(ema.update(7, p3), [0.25 * 0.5 + 0.75 * 0.75, 0.25 * 0.5 + 0.75 * 0.25])
    np.testing.assert_allclose(ema.update(8, p2), p2)  # tracks do not share state
    win = ProbSmoother("window", window=2)
    win.update(1, p1)
    np.testing.assert_allclose(win.update(1, p2), [0.5, 0.5])
    np.testing.assert_allclose(win.update(1, p3), [0.25, 0.75])  # p1 left the window
    none = ProbSmoother("none")
    np.testing.assert_allclose(none.update(1, p3), p3)
    assert len(none) == 0
    ema.forget([7, 8, 99])
    assert len(ema) == 0


@pytest.mark.parametrize("kwargs", [{"method": "median"}, {"alpha": 0.0}, {"alpha": 1.5}, {"window": 0}])
def test_smoother_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ProbSmoother(**{"method": "ema", **kwargs})


def test_sparse_sampling_keeps_people() -> None:
    """One analysed frame every 3 s (--fps 0.33): people move far between samples and stay longer
    than max_lost_s between updates; with appearance they keep their IDs."""
    rng = np.random.default_rng(4)
    fa, fb = rng.normal(size=24), rng.normal(size=24)
    tracker = FaceTracker()
    seen = []
    for k in range(8):
        boxes = np.array([box_at(100 + 150 * (k % 3), 100), box_at(500 - 150 * (k % 3), 300)])
        feats = np.stack([fa, fb]) + 0.05 * rng.normal(size=(2, 24))
        seen.append(tracker.update(boxes, timestamp=3.0 * k, features=feats).tolist())
    assert all(ids == seen[0] for ids in seen), seen
    # without appearance, a still face sampled every 3 s is kept too (removal scales with the interval)
    tracker = FaceTracker()
    ids = [tracker.update(box_at(100, 100)[None], timestamp=3.0 * k)[0] for k in range(5)]
    assert len(set(ids)) == 1
