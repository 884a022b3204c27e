"""Similarity transform and warping: recover known rotations/scales."""
import math

import numpy as np
import pytest

from lightfer.alignment import ALIGN_TEMPLATE, align_face, crop_box, similarity_transform, template_points


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("angle,scale,t", [(0.0, 1.0, (0, 0)), (30.0, 2.5, (10, -4)), (-75.0, 0.4, (100, 50))])
def test_recovers_known_similarity(angle, scale, t):
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    src = ALIGN_TEMPLATE * 100
    dst = scale * src @ rot.T + np.array(t)
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-8)


def test_least_squares_with_noise_and_no_reflection():
    rng = np.random.default_rng(0)
    src = ALIGN_TEMPLATE * 100
    dst = src[:, ::-1].copy()  # a reflection: the best similarity must still be a proper rotation
    m = similarity_transform(src, dst + rng.normal(0, 0.1, dst.shape))
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_points_raise():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_template_margin_shrinks_towards_centre():
    t0, t1 = template_points(112, 0.0), template_points(112, 0.5)
    np.testing.assert_allclose(t0, ALIGN_TEMPLATE * 112)
    np.testing.assert_allclose(t1 - 56, (t0 - 56) / 2)


def test_align_face_puts_landmarks_on_template():
    """Draw dots at rotated/scaled template positions; after alignment they sit on the template."""
    import cv2

    img = np.zeros((300, 400, 3), np.uint8)
    a = math.radians(25)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = (ALIGN_TEMPLATE * 150) @ rot.T + np.array([180, 60])
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    size, margin = 64, 0.2
    crop = align_face(img, pts, size, margin)
    assert crop.shape == (64, 64, 3)
    for tx, ty in template_points(size, margin):
        assert crop[int(round(ty)), int(round(tx))].max() > 100  # a dot lands on every template point
    assert crop[2, 2].max() == 0


def test_crop_box_square_and_centered():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 30:50] = 255
    crop = crop_box(img, np.array([30, 40, 50, 60]), 20, 0.0)
    assert crop.shape == (20, 20, 3) and crop.mean() > 240
