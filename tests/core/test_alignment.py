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


def _smooth_and_noisy(seed: int = 0):
    h, w = 900, 1200
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    smooth = np.clip(127 + 60 * np.sin(x / 90) + 50 * np.cos(y / 70 + x / 200), 0, 255)
    noise = np.random.default_rng(seed).normal(0, 20, (h, w))
    as_rgb = lambda a: np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)  # noqa: E731
    return as_rgb(smooth), as_rgb(smooth + noise)


@pytest.mark.parametrize("angle,scale", [(0.0, 0.1), (20.0, 0.2), (-35.0, 0.07), (10.0, 0.6)])
def test_warp_crop_antialiases_shrinking_warps_without_moving_the_picture(angle, scale):
    """Shrinking: the anti-aliased crop shows the same picture as the plain warp (smooth content within a few
    grey levels, i.e. no shift) while pixel noise is averaged away instead of folded into the crop."""
    import cv2

    from lightfer.alignment import warp_crop

    smooth, noisy = _smooth_and_noisy()
    a = math.radians(angle)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.hstack([lin, (np.array([32.0, 32.0]) - lin @ [600.0, 450.0])[:, None]])
    plain = cv2.warpAffine(smooth, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(warp_crop(smooth, m, 64, antialias=False), plain)
    aa = warp_crop(smooth, m, 64).astype(float)
    # within a few grey levels everywhere; up to ~7 where the crop leaves the image at 0.07 (the replicated
    # border is the area average of the edge's last 14 px there, the edge pixel itself in the plain warp)
    assert aa.shape == (64, 64, 3) and np.abs(aa - plain).mean() < 0.6 and np.abs(aa - plain).max() <= 8
    noise_plain = (warp_crop(noisy, m, 64, antialias=False).astype(float) - plain).std()
    noise_aa = (warp_crop(noisy, m, 64).astype(float) - aa).std()
    assert noise_plain > 9 and noise_aa < 0.6 * noise_plain


def test_warp_crop_leaves_enlarging_warps_alone_and_handles_faces_at_the_edge():
    import cv2

    from lightfer.alignment import warp_crop

    smooth, _ = _smooth_and_noisy()
    m = np.array([[1.5, 0.1, -20.0], [-0.1, 1.5, -30.0]])
    ref = cv2.warpAffine(smooth, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(warp_crop(smooth, m, 64), ref)
    # a crop reaching far outside the image (face at the corner): border replicated as the plain warp does
    m = np.array([[0.1, 0.0, 40.0], [0.0, 0.1, 40.0]])
    plain = cv2.warpAffine(smooth, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(warp_crop(smooth, m, 64).astype(float) - plain).max() <= 4
    # an image smaller than one averaging block still gives a crop of the right size
    tiny = smooth[:5, :5]
    assert warp_crop(tiny, np.array([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]]), 64).shape == (64, 64, 3)
