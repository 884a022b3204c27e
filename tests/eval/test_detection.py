"""Detector scoring: WIDER ground-truth parsing, matching rules, AP known answers, a fake and the real detector."""
from __future__ import annotations

import numpy as np
import pytest

from lightfer.data import MalformedFileError
from lightfer.detection.box_utils import box_iou
from lightfer.eval.detection import average_precision, evaluate_detector, match_image, read_wider_gt
from lightfer.structures import Face

from ..data.synth import write_png

GT = """ev/a.jpg
3
10 10 20 20 0 0 0 0 0 0
50 10 20 20 0 0 0 0 0 0
10 50 20 20 0 0 0 1 0 0
ev/b.jpg
0
0 0 0 0 0 0 0 0 0 0
ev2/c.jpg
1
5 5 30 40 0 0 0 0 0 0
"""


def test_read_wider_gt(tmp_path):
    p = tmp_path / "wider_face_val_bbx_gt.txt"
    p.write_text(GT)
    imgs = read_wider_gt(p)
    assert [g.path for g in imgs] == ["ev/a.jpg", "ev/b.jpg", "ev2/c.jpg"]
    np.testing.assert_array_equal(imgs[0].boxes[1], [50, 10, 70, 30])  # x1 y1 w h -> x1 y1 x2 y2
    np.testing.assert_array_equal(imgs[0].ignore, [False, False, True])  # invalid == 1
    assert imgs[1].boxes.shape == (0, 4)  # a 0-face image's all-zero line is not a face
    p.write_text("ev/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(MalformedFileError, match="file ends inside the boxes of ev/a.jpg"):
        read_wider_gt(p)
    p.write_text("ev/a.jpg\ntwo\n")
    with pytest.raises(MalformedFileError, match=r":2: expected the face count"):
        read_wider_gt(p)


def test_iou_and_matching_rules():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    ignore = np.array([False, False, True])
    det = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [40, 0, 50, 10], [100, 100, 110, 110], [20, 0, 30, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    status, matched, mscore = match_image(det, scores, gt, ignore)
    np.testing.assert_array_equal(status, [1, 0, -1, 0, 1])  # duplicate FP, ignore-region ignored, stray FP
    np.testing.assert_array_equal(matched, [True, True, False])
    np.testing.assert_array_equal(mscore[:2], [0.9, 0.5])
    # the higher score claims the box even when listed later
    status, _, _ = match_image(det[[1, 0]], scores[[1, 0]], gt[:1], ignore[:1])
    np.testing.assert_array_equal(status, [0, 1])
    assert match_image(np.zeros((0, 4)), np.zeros(0), gt, ignore)[0].shape == (0,)


def test_average_precision_known_answer():
    # TP .9, FP .8, ignored .7, TP .6 over 2 valid faces -> P/R points (1, .5) (.5, .5) (2/3, 1)
    ap, p, r = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, -1, 1], np.int8), 2)
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    np.testing.assert_allclose(r, [0.5, 0.5, 1.0])
    assert average_precision(np.array([0.5]), np.array([0], np.int8), 3)[0] == 0.0


def test_evaluate_detector_with_a_perfect_and_a_shifted_fake(tmp_path):
    (tmp_path / "wider_face_val_bbx_gt.txt").write_text(GT)
    for name in ("ev/a.jpg", "ev/b.jpg", "ev2/c.jpg"):
        write_png(tmp_path / "images" / name, np.zeros((100, 100, 3), np.uint8))
    truth = {g.path: g for g in read_wider_gt(tmp_path / "wider_face_val_bbx_gt.txt")}
    calls = []

    def perfect(img):
        g = list(truth.values())[len(calls)]
        calls.append(g.path)
        return [Face(box=b.astype(np.float32), score=0.9, landmarks=np.zeros((5, 2), np.float32)) for b in g.boxes]

    r = evaluate_detector(perfect, tmp_path)
    assert r["ap"] == pytest.approx(1.0) and r["recall"] == 1.0 and r["precision"] == 1.0
    assert r["valid_faces"] == 3 and r["ignored_faces"] == 1 and r["detections"] == 4
    assert r["recall_by_event"]["ev"]["faces"] == 2 and r["recall_by_height"]["16-32px"]["faces"] == 2
    low = evaluate_detector(lambda img: [Face(box=np.array([0, 0, 100, 100], np.float32), score=0.3,
                                              landmarks=np.zeros((5, 2), np.float32))], tmp_path)
    assert low["ap"] == 0.0 and low["recall"] == 0.0 and low["detections"] == 3


@pytest.mark.data
def test_real_detector_on_wider_images_with_large_faces(shared_data):
    from lightfer.detection import FaceDetector

    root = shared_data / "wider_face_val_subset"
    gt = [g for g in read_wider_gt(root / "wider_face_val_bbx_gt.txt")
          if len(g.boxes) and (g.boxes[:, 3] - g.boxes[:, 1]).min() >= 40][:5]  # tiny faces are a known weak spot
    sub = "\n".join(f"{g.path}\n{len(g.boxes)}\n" + "\n".join(
        f"{x1:g} {y1:g} {x2 - x1:g} {y2 - y1:g} 0 0 0 {int(i)} 0 0" for (x1, y1, x2, y2), i in zip(g.boxes, g.ignore))
        for g in gt if len(g.boxes))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gt.txt").write_text(sub + "\n")
        det = FaceDetector(score_threshold=0.02)
        r = evaluate_detector(det.detect, root, Path(tmp) / "gt.txt")
    assert r["images"] == 5 and r["valid_faces"] >= 5
    assert r["ap"] > 0.85 and r["recall"] > 0.85 and r["precision"] > 0.8
