"""RetinaFace on real photos and composites: every face found, landmarks sensible, ONNX == PyTorch."""
import numpy as np
import pytest

from lightfer.detection import FaceDetector
from lightfer.io import read_image

from .faces import background, face_tile, match_centres, paste


@pytest.fixture(scope="module")
def det():
    return FaceDetector("onnx")


@pytest.fixture(scope="module")
def det_torch():
    return FaceDetector("torch")


@pytest.fixture(scope="module")
def photos(astronaut, portraits):
    return {"astronaut": astronaut, "obama": read_image(portraits["obama"]), "trump": read_image(portraits["trump"])}


@pytest.fixture(scope="module")
def tiles(det, photos):
    out = {}
    for name, img in photos.items():
        faces = det.detect(img)
        out[name] = face_tile(img, faces[0].box)
    return out


@pytest.mark.parametrize("name", ["astronaut", "obama", "trump"])
def test_one_face_per_portrait(det, photos, name):
    faces = det.detect(photos[name])
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.95
    x1, y1, x2, y2 = f.box
    assert (x2 - x1) > 60 and (y2 - y1) > 60
    lm = f.landmarks
    assert lm.shape == (5, 2)
    assert ((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)).all()
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left eye/mouth corner left of right ones
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth


def test_composite_scales_rotations_positions(det, tiles):
    rng = np.random.default_rng(3)
    canvas = background(720, 1100)
    expected, sizes = [], []
    spots = [(20, 20), (380, 10), (760, 30), (40, 380), (420, 390), (800, 420)]
    for k, at in enumerate(spots):
        name = ["astronaut", "obama", "trump"][k % 3]
        tile, centre = tiles[name]
        scale = 0.45 + 0.12 * k
        scale = min(scale, 270 / max(tile.shape[:2]))
        angle = float(rng.uniform(-25, 25))
        expected.append(paste(canvas, tile, centre, at, scale, angle, mirror=bool(k % 2)))
        sizes.append(scale * tile.shape[0] / 2.2)
    faces = det.detect(canvas)
    boxes = np.array([f.box for f in faces])
    d = match_centres(boxes, np.array(expected), 0)
    assert (d < 0.35 * np.array(sizes)).all(), d
    assert len(faces) == len(spots)
    for f in faces:
        x1, y1, x2, y2 = f.box
        pad = 0.15 * (x2 - x1)
        assert ((f.landmarks[:, 0] > x1 - pad) & (f.landmarks[:, 0] < x2 + pad)).all()


def test_no_face_images(det):
    assert det.detect(background(480, 640)) == []
    from skimage import data

    assert det.detect(data.coffee()) == []  # a coffee cup on a table


def test_two_hundred_faces(det, tiles):
    tile, centre = tiles["astronaut"]
    canvas = background(1000, 1400)
    expected = []
    scale = 64 / tile.shape[1]
    for r in range(10):
        for c in range(20):
            expected.append(paste(canvas, tile, centre, (c * 70, r * 100), scale))
    faces = det.detect(canvas)
    found = match_centres(np.array([f.box for f in faces]), np.array(expected), 0)
    assert (found < 10).mean() > 0.95, (found < 10).mean()
    assert len(faces) <= 210


def test_onnx_matches_torch(det, det_torch, photos):
    img = photos["obama"]
    a, b = det.detect(img), det_torch.detect(img)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].box, b[0].box, atol=0.05)
    np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=0.05)
    assert abs(a[0].score - b[0].score) < 1e-4
    x = np.random.default_rng(0).normal(0, 50, (1, 3, 96, 160)).astype(np.float32)
    for ra, rb in zip(det._forward(x), det_torch._forward(x)):
        np.testing.assert_allclose(ra, rb, atol=2e-4, rtol=1e-3)


def test_batch_of_varied_sizes_equals_singles(det, photos):
    imgs = [photos["trump"], photos["astronaut"], photos["obama"]]
    batch = det.detect_batch(imgs)
    for img, faces in zip(imgs, batch):
        single = det.detect(img)
        assert len(faces) == len(single) == 1
        np.testing.assert_allclose(faces[0].box, single[0].box, atol=2.0)


def test_options_threshold_maxfaces_minsize(tiles):
    tile, centre = tiles["trump"]
    canvas = background(500, 900)
    paste(canvas, tile, centre, (10, 10), 1.0)
    paste(canvas, tile, centre, (500, 300), 0.35)  # a small face
    assert len(FaceDetector("onnx").detect(canvas)) == 2
    assert len(FaceDetector("onnx", max_faces=1).detect(canvas)) == 1
    big_only = FaceDetector("onnx", min_face_size=60).detect(canvas)
    assert len(big_only) == 1 and big_only[0].box[0] < 300
    assert FaceDetector("onnx", score_threshold=1.01).detect(canvas) == []


def test_large_image_downscaled_boxes_in_input_pixels(photos):
    import cv2

    img = cv2.resize(photos["trump"], None, fx=8, fy=8, interpolation=cv2.INTER_LINEAR)  # 2144 x 2712
    small = FaceDetector("onnx").detect(photos["trump"])[0]
    faces = FaceDetector("onnx", max_size=1024).detect(img)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box / 8, small.box, atol=0.07 * (small.box[2] - small.box[0]))


def test_rejects_wrong_input(det):
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
