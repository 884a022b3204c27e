"""Request bodies to RGB uint8 images and video files, with the service's limits.

Every failure is a :class:`~lightfer.service.engine.ServiceError` with the HTTP status to answer:
413 too large (bytes, pixels, seconds), 415 not an image / video type we read, 400 a body that
cannot be parsed or decoded.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from lightfer.service.config import ServiceConfig
from lightfer.service.engine import ServiceError

log = logging.getLogger(__name__)

IMAGE_TYPES = "JPEG, PNG, BMP, GIF, WEBP or TIFF"
VIDEO_TYPES = "MP4/MOV, AVI, MKV/WEBM"
_CHUNK = 1 << 20


def sniff_image(data: bytes) -> str | None:
    """Image format from the first bytes (``"jpeg"``, ``"png"``, ...), None when not an image we read."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def sniff_video(head: bytes) -> str | None:
    """Container format from the first bytes (``"mp4"``, ``"avi"``, ``"mkv"``), None when unknown."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _check_part_type(upload: UploadFile, kind: str) -> None:
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared and not (declared.startswith(f"{kind}/") or declared == "application/octet-stream"):
        raise ServiceError(415, f"uploaded file {upload.filename!r} is {declared}; send an {kind} file")


async def _upload_from_form(request: Request) -> UploadFile:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except ServiceError:
        raise
    except Exception as exc:  # malformed multipart, too many parts
        raise ServiceError(400, f"could not parse the multipart body: {exc}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise ServiceError(400, "multipart body has no file; send the image in a field named 'file'")
        upload = uploads[0]
    return upload


async def read_image_body(request: Request, config: ServiceConfig) -> tuple[bytes, str]:
    """The encoded image bytes of a request and a source name for the result.

    Accepts ``multipart/form-data`` (field ``file``), ``application/json``
    (``{"image": "<base64 or data URL>", "name": "optional.jpg"}``) or a raw ``image/*`` body.
    """
    media = _media_type(request)
    if media == "multipart/form-data":
        upload = await _upload_from_form(request)
        _check_part_type(upload, "image")
        data = await upload.read(config.max_upload_bytes + 1)
        source = upload.filename or "upload"
    elif media == "application/json":
        data, source = _from_json(await request.body(), config)
    elif media.startswith("image/") or media == "application/octet-stream":
        data, source = await request.body(), "upload"
    else:
        raise ServiceError(
            415, f"unsupported content type {media or '(none)'!r}; send multipart/form-data (field 'file'), "
            "application/json with base64 'image', or an image/* body"
        )
    if not data:
        raise ServiceError(400, "empty image: the request carried no bytes")
    if len(data) > config.max_upload_bytes:
        raise ServiceError(413, f"image too large: more than {config.max_upload_bytes} bytes (the limit)")
    return data, source


def _from_json(body: bytes, config: ServiceConfig) -> tuple[bytes, str]:
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise ServiceError(400, 'JSON body must be an object {"image": "<base64>"}')
    text = payload["image"].strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise ServiceError(400, "data URL must be base64-encoded")
    if len(text) > config.max_upload_bytes * 4 // 3 + 4:
        raise ServiceError(413, f"image too large: more than {config.max_upload_bytes} bytes (the limit)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(400, f"'image' is not valid base64: {exc}") from exc
    name = payload.get("name")
    return data, str(name) if name else "base64"


def decode_image(data: bytes, config: ServiceConfig, source: str = "upload") -> np.ndarray:
    """Encoded bytes to RGB uint8 ``(H, W, 3)``, refusing unknown formats and oversized images."""
    fmt = sniff_image(data)
    if fmt is None:
        raise ServiceError(415, f"{source}: not an image type we read (expected {IMAGE_TYPES})")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            width, height = im.size
    except Exception as exc:
        raise ServiceError(400, f"{source}: could not decode the {fmt.upper()} image: {exc}") from exc
    if width * height > config.max_pixels:
        raise ServiceError(
            413, f"{source}: image too large: {width}x{height} = {width * height} pixels; "
            f"the limit is {config.max_pixels}"
        )
    from lightfer.io import ImageReadError, read_image

    try:
        image = read_image(data)
    except (ImageReadError, OSError, ValueError) as exc:
        raise ServiceError(400, f"{source}: could not decode the {fmt.upper()} image: {exc}") from exc
    return image


async def save_video_body(request: Request, config: ServiceConfig) -> tuple[str, str]:
    """Write an uploaded clip (multipart field ``file`` or a raw ``video/*`` body) to a temp file.

    Returns:
        ``(path, source name)``; the caller deletes the file.
    """
    media = _media_type(request)
    fd, path = tempfile.mkstemp(prefix="lightfer-video-", suffix=".bin")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            if media == "multipart/form-data":
                upload = await _upload_from_form(request)
                _check_part_type(upload, "video")
                source = upload.filename or "upload"
                while chunk := await upload.read(_CHUNK):
                    size += len(chunk)
                    if size > config.max_video_bytes:
                        break
                    out.write(chunk)
            elif media.startswith("video/") or media == "application/octet-stream":
                source = "upload"
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_video_bytes:
                        break
                    out.write(chunk)
            else:
                raise ServiceError(
                    415, f"unsupported content type {media or '(none)'!r}; send multipart/form-data "
                    "(field 'file') or a video/* body"
                )
        if size == 0:
            raise ServiceError(400, "empty video: the request carried no bytes")
        if size > config.max_video_bytes:
            raise ServiceError(413, f"video too large: more than {config.max_video_bytes} bytes (the limit)")
        with open(path, "rb") as f:
            if sniff_video(f.read(16)) is None:
                raise ServiceError(415, f"{source}: not a video container we read (expected {VIDEO_TYPES})")
        return path, source
    except BaseException:
        os.unlink(path)
        raise


def probe_video(path: str, config: ServiceConfig, source: str) -> tuple[float, int, float]:
    """``(fps, frame count, duration s)`` of a clip; 400 when unreadable, 413 when too long."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ServiceError(400, f"{source}: could not open the video")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, _ = cap.read()
        if not ok:
            raise ServiceError(400, f"{source}: could not decode a frame of the video")
    finally:
        cap.release()
    if not 0 < fps < 1000:
        fps = 25.0
        log.warning("%s: no usable frame rate in the container; assuming 25 fps", source)
    duration = count / fps if count > 0 else 0.0
    if duration > config.max_video_seconds:
        raise ServiceError(
            413, f"{source}: clip too long: {duration:.1f} s; the limit is {config.max_video_seconds:g} s"
        )
    return fps, count, duration
