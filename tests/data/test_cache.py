"""The aligned-crop cache (`lightfer prepare`): fake-detector geometry, real photos, round trip, real FER2013."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lightfer.cli import main
from lightfer.data import FERDataset, build_dataset
from lightfer.data.cache import CropSettings, crop_faces, read_cache, update_index, write_split
from lightfer.structures import Face

from .synth import write_png

# landmarks of a frontal face inside a 48x48 image (eyes, nose, mouth corners), source pixels
SRC_MARKS = np.array([[16, 20], [32, 20], [24, 28], [18, 36], [30, 36]], np.float32)


def fake_detector(settings: CropSettings, src_side: int = 48, marks: np.ndarray = SRC_MARKS):
    """Reports the face where ``marks`` land after the cache's upscale + pad, and records the image it saw."""
    seen = []

    def detect(image: np.ndarray) -> list[Face]:
        seen.append(image.shape)
        scale = settings.upscale if src_side < settings.small_side else 1.0
        off = round(src_side * scale * settings.pad)
        pts = marks * scale + off
        box = np.r_[pts.min(0) - 10, pts.max(0) + 10].astype(np.float32)
        return [Face(box=box, score=0.9, landmarks=pts.astype(np.float32))]

    return detect, seen


def test_crop_geometry_maps_back_to_source_pixels():
    s = CropSettings(size=32, margin=0.1, upscale=4, pad=0.25)
    detect, seen = fake_detector(s)
    imgs = np.random.default_rng(0).integers(0, 255, (2, 48, 48), dtype=np.uint8)
    out = crop_faces(imgs, detect, s)
    assert seen == [(288, 288, 3)] * 2  # 48 * 4 = 192, plus 25% per side
    assert out["images"].shape == (2, 32, 32) and out["face_found"].all()
    np.testing.assert_allclose(out["landmarks"][0], SRC_MARKS, atol=1e-4)
    np.testing.assert_allclose(out["boxes"][0], [16 - 2.5, 20 - 2.5, 32 + 2.5, 36 + 2.5], atol=1e-4)
    # the crop is the product's alignment of the upscaled image, with the plain warp (an enlarged image has
    # nothing to anti-alias; every shipped model's crops were cut this way)
    from lightfer.alignment import align_face

    big = cv2.copyMakeBorder(cv2.resize(np.repeat(imgs[1][..., None], 3, -1), (192, 192), interpolation=cv2.INTER_CUBIC),
                             48, 48, 48, 48, cv2.BORDER_REPLICATE)
    ref = align_face(big, SRC_MARKS * 4 + 48, 32, 0.1, antialias=False)[..., 0]
    np.testing.assert_array_equal(out["images"][1], ref)
    assert np.abs(align_face(big, SRC_MARKS * 4 + 48, 32, 0.1)[..., 0].astype(int) - ref).max() > 0


def test_no_face_or_face_in_padding_falls_back_to_own_crop():
    s = CropSettings(size=24)
    imgs = np.random.default_rng(1).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    out = crop_faces(imgs[:1], lambda im: [], s)
    assert not out["face_found"][0] and np.isnan(out["boxes"][0]).all()
    np.testing.assert_array_equal(out["images"][0], cv2.resize(imgs[0], (24, 24), interpolation=cv2.INTER_AREA))
    # a face found only in the padding (centre outside the original image) is not taken
    outside = np.array([[1, 1], [5, 1], [3, 3], [1, 5], [5, 5]], np.float32)
    out = crop_faces(imgs[1:], lambda im: [Face(box=np.array([0, 0, 8, 8], np.float32), score=0.99, landmarks=outside)], s)
    assert not out["face_found"][0]


@pytest.fixture(scope="module")
def detector():
    from lightfer.detection import FaceDetector

    return FaceDetector()


def test_real_detector_on_small_gray_and_photo_faces(detector, astronaut, portraits):
    from lightfer.io import read_image

    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    fer_like = cv2.resize(gray[40:200, 150:300], (48, 48), interpolation=cv2.INTER_AREA)  # a FER-sized face
    blank = np.full((48, 48), 128, np.uint8)
    out = crop_faces(np.stack([fer_like, blank]), detector.detect, CropSettings(size=64, margin=0.15))
    np.testing.assert_array_equal(out["face_found"], [True, False])
    eyes = out["landmarks"][0, :2]
    assert 5 < eyes[0, 0] < eyes[1, 0] < 43 and 5 < eyes[:, 1].mean() < 30  # eyes in the upper part, left-right order
    photo = cv2.resize(read_image(portraits["trump"]), (200, 200))
    out = crop_faces(photo[None], detector.detect, CropSettings(size=112))
    assert out["face_found"][0] and out["scores"][0] > 0.9
    x1, y1, x2, y2 = out["boxes"][0]
    assert 30 < (x1 + x2) / 2 < 170 and 20 < (y1 + y2) / 2 < 180


def test_write_read_roundtrip_and_index(tmp_path, detector, astronaut):
    faces = np.stack([cv2.resize(astronaut[30:210, 140:310], (96, 96)), np.full((96, 96, 3), 90, np.uint8)])
    ds = FERDataset(images=faces, labels=np.array([1, 0]), classes=("angry", "happy"), ids=["a", "b"], name="t",
                    soft_labels=np.array([[0.2, 0.8], [1, 0]], np.float32))
    s = CropSettings(size=48, margin=0.15)
    entry = write_split(tmp_path, "test", ds, detector.detect, s)
    update_index(tmp_path, "test", entry, dataset=ds, settings=s, source="toy", model=None, detector={})
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["splits"]["test"]["detection_rate"] == 0.5 and index["size"] == 48 and index["classes"] == ["angry", "happy"]
    back = build_dataset(f"cache:{tmp_path}", "test", return_soft=True)
    assert back.images.shape == (2, 48, 48, 3) and back.ids == ["a", "b"] and back.classes == ("angry", "happy")
    np.testing.assert_array_equal(back.meta["face_found"], [True, False])
    np.testing.assert_allclose(back.soft_labels, ds.soft_labels)
    assert len(read_cache(tmp_path, "test", found_only=True)) == 1
    with pytest.raises(FileNotFoundError, match="split 'train' not in the cache"):
        read_cache(tmp_path, "train")
    with pytest.raises(ValueError, match="existing cache has size=48"):
        update_index(tmp_path, "val", entry, dataset=ds, settings=CropSettings(size=64), source="toy", model=None,
                     detector={})
    with pytest.raises(FileNotFoundError, match="no crop-cache index"):
        read_cache(tmp_path / "nothing", "test")


def test_prepare_cli_on_a_folder_of_real_photos(tmp_path, astronaut, portraits, capsys):
    from lightfer.io import read_image

    write_png(tmp_path / "data" / "happy" / "astronaut.png", astronaut)
    write_png(tmp_path / "data" / "neutral" / "obama.png", cv2.resize(read_image(portraits["obama"]), (240, 220)))
    write_png(tmp_path / "data" / "neutral" / "wall.png", np.full((64, 64, 3), 200, np.uint8))
    rc = main(["prepare", "--data", f"folder:{tmp_path / 'data'}?size=256", "--out", str(tmp_path / "cache"),
               "--splits", "all", "--no-progress"])
    assert rc == 0
    from lightfer.defaults import DEFAULT_MODEL
    from lightfer.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(DEFAULT_MODEL)  # prepare takes the default model's crops
    mode = getattr(cfg, "crop_mode", "align")
    assert f"2/3 faces detected (66.67%), {cfg.input_size}px {mode} crops, margin {cfg.crop_margin}" in capsys.readouterr().out
    ds = build_dataset(f"cache:{tmp_path / 'cache'}", "all")
    assert ds.images.shape == (3, 64, 64, 3) and ds.classes == ("happy", "neutral")
    np.testing.assert_array_equal(ds.meta["face_found"], [True, True, False])
    assert main(["prepare", "--data", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "c2"),
                 "--splits", "all"]) == 1
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.data
def test_real_fer2013_detection_rate(shared_data, detector):
    ds = build_dataset(f"fer2013:{shared_data / 'fer2013' / 'fer2013.csv.gz'}", "test").subset(range(80))
    out = crop_faces(ds.images, detector.detect, CropSettings(size=64, margin=0.15))
    assert out["face_found"].mean() >= 0.9
    assert out["images"].shape == (80, 64, 64)


def test_box_mode_cuts_the_detector_box_like_serving():
    from lightfer.alignment import crop_box

    s = CropSettings(size=40, margin=0.0, mode="box", upscale=4, pad=0.25)
    detect, _ = fake_detector(s)
    img = np.random.default_rng(3).integers(0, 255, (1, 48, 48, 3), dtype=np.uint8)
    out = crop_faces(img, detect, s)
    big = cv2.copyMakeBorder(cv2.resize(img[0], (192, 192), interpolation=cv2.INTER_CUBIC), 48, 48, 48, 48,
                             cv2.BORDER_REPLICATE)
    box = detect(big)[0].box
    np.testing.assert_array_equal(out["images"][0], crop_box(big, box, 40, 0.0, antialias=False))
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop_faces(img, detect, CropSettings(mode="warp"))


def test_sharded_cache_reads_like_the_original(tmp_path):
    """shard_cache: the same samples in the same order, several files per split; a missing shard is named."""
    from lightfer.data.cache import shard_cache

    rng = np.random.default_rng(0)
    n = 40
    arrays = {"images": rng.integers(0, 255, (n, 32, 32), dtype=np.uint8), "labels": rng.integers(0, 3, n),
              "face_found": rng.random(n) > 0.2, "ids": np.array([f"id{i}" for i in range(n)]),
              "soft_labels": rng.random((n, 3)).astype(np.float32)}
    src = tmp_path / "src"
    src.mkdir()
    np.savez_compressed(src / "train.npz", **arrays)
    index = {"format": "lightfer-crop-cache", "version": 1, "classes": ["a", "b", "c"], "channels": 1, "size": 32,
             "margin": 0.0, "crop_mode": "align", "splits": {"train": {"file": "train.npz", "count": n}}}
    (src / "index.json").write_text(json.dumps(index))
    size_mb = (src / "train.npz").stat().st_size / 1e6
    names = shard_cache(src, tmp_path / "dst", max_mb=size_mb / 3)["train"]
    assert len(names) >= 3 and all((tmp_path / "dst" / f).stat().st_size < (src / "train.npz").stat().st_size
                                   for f in names)
    a, b = read_cache(src, "train"), build_dataset(f"cache:{tmp_path / 'dst'}", "train", return_soft=True)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.soft_labels, b.soft_labels)
    assert a.ids == b.ids and len(read_cache(tmp_path / "dst", "train", found_only=True)) == int(arrays["face_found"].sum())
    from lightfer.data.cache import read_cache_arrays

    raw = read_cache_arrays(tmp_path / "dst", "train")  # every stored array, e.g. for the landmark probes
    np.testing.assert_array_equal(raw["face_found"], arrays["face_found"])
    with pytest.raises(ValueError, match="another folder"):
        shard_cache(src, src, 1.0)
    (tmp_path / "dst" / names[1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"{names[1]}: file of split 'train' missing"):
        read_cache(tmp_path / "dst", "train")


def _fer_csv(path, n: int, seed: int = 0) -> np.ndarray:
    """A FER2013-format CSV of ``n`` smooth random 48x48 training faces; returns the images."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 6, 6)).astype(np.float32)
    images = np.stack([cv2.resize(c, (48, 48), interpolation=cv2.INTER_CUBIC) for c in coarse])
    images = np.clip(images + rng.normal(0, 6, images.shape), 0, 255).astype(np.uint8)
    rows = ["emotion,pixels,Usage"] + [f"{i % 7},{' '.join(map(str, im.ravel()))},Training" for i, im in enumerate(images)]
    path.write_text("\n".join(rows) + "\n")
    return images


def _flaky(detect):
    """``detect`` that finds no face in every fourth image it is given (so caches hold both kinds of crop)."""
    calls = iter(range(10_000))
    return lambda im: [] if next(calls) % 4 == 3 else detect(im)


def _fer_cache(tmp_path, n: int, out: str, limit: int | None = None):
    """A fake-detected 32 px cache ``tmp_path/out`` of ``n`` synthetic FER2013 faces (its first ``limit``), one in four
    without a face; returns the full dataset, its spec, the settings and the fake detector."""
    csv = tmp_path / "fer.csv"
    _fer_csv(csv, n)
    spec = f"fer2013:{csv}"
    ds = build_dataset(spec, "train")
    s = CropSettings(size=32)
    detect, _ = fake_detector(s)
    part = ds.subset(range(limit)) if limit else ds
    entry = write_split(tmp_path / out, "train", part, _flaky(detect), s)
    update_index(tmp_path / out, "train", entry, dataset=part, settings=s, source=spec, model=None, detector={})
    return ds, spec, s, detect


def test_packed_cache_unpacks_bit_for_bit(tmp_path):
    """pack_cache stores source images + detections; unpack_cache cuts the very same crops (SHA-256 checked),
    keeps the first N of a limited split, and a packed or damaged cache is refused with the file named."""
    from lightfer.data.cache import pack_cache, read_cache_arrays, unpack_cache

    _fer_cache(tmp_path, 12, "cache")
    mb = pack_cache(tmp_path / "cache", tmp_path / "pack", limit={"train": 10})
    assert set(mb) == {"train"} and mb["train"] > 0
    with pytest.raises(ValueError, match="unpack the cache first"):
        read_cache(tmp_path / "pack", "train")
    assert unpack_cache(tmp_path / "pack", tmp_path / "back") == {"train": 10}
    a, b = read_cache_arrays(tmp_path / "cache", "train"), read_cache_arrays(tmp_path / "back", "train")
    assert not a["face_found"].all() and a["face_found"].any()  # both the warp and the fallback are cut again
    for key in ("images", "labels", "face_found", "landmarks", "ids"):
        np.testing.assert_array_equal(a[key][:10], b[key])
    index = json.loads((tmp_path / "back" / "index.json").read_text())
    assert index["splits"]["train"]["count"] == 10 and index["splits"]["train"]["file"] == "train.npz"
    # a cut that no longer matches (here: other crop settings in the index) is refused, naming the split
    packed = json.loads((tmp_path / "pack" / "index.json").read_text())
    (tmp_path / "pack" / "index.json").write_text(json.dumps({**packed, "margin": 0.2}))
    with pytest.raises(ValueError, match="of the 10 crops cut again for split 'train' differ"):
        unpack_cache(tmp_path / "pack", tmp_path / "back2")
    unpack_cache(tmp_path / "pack", tmp_path / "back2", strict=False)
    lenient = json.loads((tmp_path / "back2" / "index.json").read_text())["splits"]["train"]
    assert 0 < lenient["recut_differs"] <= 10
    # a source without the cached ids
    other = tmp_path / "other.csv"
    _fer_csv(other, 3)
    with pytest.raises(ValueError, match="ids of split 'train'"):
        pack_cache(tmp_path / "cache", tmp_path / "pack3", source=f"fer2013:{other}")


def test_reused_detections_cut_the_crops_a_detector_run_cuts(tmp_path):
    """write_split(reuse=load_detections(...)) takes stored detections by id: only images the reused cache lacks
    meet the detector, the crops equal a fresh run's bit for bit, other crop sizes are cut from the same
    detections, and a cache detected otherwise, or one whose pixels differ under the same ids, is refused."""
    from lightfer.data.cache import load_detections, read_cache_arrays

    ds, _, s, detect = _fer_cache(tmp_path, 10, "a", limit=7)
    first = ds.subset(range(7))
    reuse = load_detections([tmp_path / "a"], s, {})
    seen = []
    write_split(tmp_path / "b", "train", ds, lambda im: seen.append(1) or detect(im), s, reuse=reuse)
    assert len(seen) == 3  # the 3 images the first cache lacks
    a, b = read_cache_arrays(tmp_path / "a", "train"), np.load(tmp_path / "b" / "train.npz")
    assert not a["face_found"].all()
    for key in ("images", "face_found", "labels", "ids"):
        np.testing.assert_array_equal(a[key], b[key][:7])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"][:7])
    # another crop size from the same detections: what a detector run at that size cuts
    s48 = CropSettings(size=48)
    fresh = write_split(tmp_path / "c", "train", first, _flaky(detect), s48)
    write_split(tmp_path / "d", "train", first, lambda im: pytest.fail("detector called"), s48,
                reuse=load_detections([tmp_path / "a"], s48, {}))
    assert fresh["count"] == 7
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "train.npz")["images"],
                                  np.load(tmp_path / "d" / "train.npz")["images"])
    with pytest.raises(ValueError, match="detected with pad=0.25"):
        load_detections([tmp_path / "a"], CropSettings(size=32, pad=0.1), {})
    # same ids, other pixels: the re-cut crops do not match the reused cache's own
    other = tmp_path / "other" / "fer.csv"
    other.parent.mkdir()
    _fer_csv(other, 10, seed=1)
    with pytest.raises(ValueError, match="its images are not this dataset's"):
        write_split(tmp_path / "e", "train", build_dataset(f"fer2013:{other}", "train"), detect, s, reuse=reuse)
