"""Known-answer tests for anchors, box/landmark decoding, IoU and NMS."""
import numpy as np
import pytest

from lightfer.detection.box_utils import box_iou, decode_boxes, decode_landmarks, nms, prior_boxes


def test_prior_count_and_first_anchors():
    pri = prior_boxes(64, 96)
    # levels: stride 8 -> 8x12 cells, 16 -> 4x6, 32 -> 2x3; 2 anchors per cell
    assert pri.shape == ((8 * 12 + 4 * 6 + 2 * 3) * 2, 4)
    # first cell of stride 8: centre (4, 4) px, sizes 16 and 32, normalised by (W=96, H=64)
    np.testing.assert_allclose(pri[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64], rtol=1e-6)
    np.testing.assert_allclose(pri[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64], rtol=1e-6)
    # next anchor moves one column right (row-major, anchor fastest)
    np.testing.assert_allclose(pri[2, :2], [12 / 96, 4 / 64], rtol=1e-6)
    # first anchor of the stride-16 level
    k = 8 * 12 * 2
    np.testing.assert_allclose(pri[k], [8 / 96, 8 / 64, 64 / 96, 64 / 64], rtol=1e-6)
    # last anchor: bottom-right cell of stride 32, size 512
    np.testing.assert_allclose(pri[-1], [80 / 96, 48 / 64, 512 / 96, 512 / 64], rtol=1e-6)


def test_prior_ceil_for_odd_sizes():
    pri = prior_boxes(33, 17)  # ceil(33/8)=5, ceil(17/8)=3; ceil(33/16)=3, 2; ceil(33/32)=2, 1
    assert len(pri) == (5 * 3 + 3 * 2 + 2 * 1) * 2


def test_decode_zero_deltas_returns_anchor_box():
    pri = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    boxes = decode_boxes(np.zeros((1, 4), np.float32), pri)
    np.testing.assert_allclose(boxes, [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)


def test_decode_known_deltas():
    pri = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    loc = np.array([[1.0, -2.0, np.log(2) / 0.2, 0.0]], np.float32)
    # centre: 0.5 + 1*0.1*0.2 = 0.52, 0.5 - 2*0.1*0.4 = 0.42; size: 0.2*2 = 0.4, 0.4
    np.testing.assert_allclose(decode_boxes(loc, pri), [[0.32, 0.22, 0.72, 0.62]], atol=1e-6)


def test_decode_landmarks_known():
    pri = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    pre = np.zeros((1, 10), np.float32)
    pre[0, 2:4] = [1.0, -1.0]  # second point shifted by (0.1*0.2, -0.1*0.4)
    pts = decode_landmarks(pre, pri)
    assert pts.shape == (1, 5, 2)
    np.testing.assert_allclose(pts[0, 0], [0.5, 0.5])
    np.testing.assert_allclose(pts[0, 1], [0.52, 0.46], atol=1e-7)


def test_box_iou_known():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_nms_known_answer():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.5], [21, 20, 31, 30]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6])
    keep = nms(boxes, scores, 0.5)
    # 3 (0.95) suppresses 0 and 1 (IoU > 0.5); 2 survives and suppresses 4 (IoU 0.818)
    assert keep.tolist() == [3, 2]
    assert nms(boxes, scores, 0.99).tolist() == [3, 0, 1, 2, 4]


def test_nms_threshold_is_strict_greater():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)  # IoU exactly 1/3
    assert nms(boxes, np.array([0.9, 0.8]), 1 / 3).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.33).tolist() == [0]


def test_nms_empty():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


@pytest.mark.parametrize("seed", [0, 1])
def test_nms_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (60, 2))], 1)
    scores = rng.uniform(size=60)
    keep = nms(boxes, scores, 0.4)
    iou = box_iou(boxes, boxes)
    # brute force: every kept box overlaps no higher-scoring kept box above the threshold,
    # every dropped box overlaps some kept higher-scoring box above it
    kept = set(keep.tolist())
    for i in range(60):
        higher_kept = [j for j in kept if scores[j] > scores[i]]
        suppressed = any(iou[i, j] > 0.4 for j in higher_kept)
        assert (i in kept) == (not suppressed)
