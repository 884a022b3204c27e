"""Settings of the HTTP service: which model, where to listen, and every limit a request meets."""
from __future__ import annotations

from dataclasses import dataclass

from lightfer.defaults import DEFAULT_MODEL

LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Limits and defaults of ``lightfer serve``; every field is also a ``lightfer serve`` option."""

    default_model: str = DEFAULT_MODEL  # expression model used when a request names none
    backend: str = "onnx"  # inference engine of every loaded model: "onnx" (ONNX Runtime) or "torch"
    threads: int | None = None  # ONNX Runtime intra-op threads per model (None = its default)
    tta: bool | None = None  # flip TTA of every loaded model unless a request says ?tta= (None: each model's own)
    max_upload_bytes: int = 10 * 1024 * 1024  # largest image upload (decoded bytes), 413 above
    max_pixels: int = 25_000_000  # largest image, width x height, 413 above (checked before decoding)
    max_video_bytes: int = 50 * 1024 * 1024  # largest video upload, 413 above
    max_video_seconds: float = 30.0  # longest clip, 413 above
    max_video_frames: int = 300  # frames analysed per clip at most (the stride is raised to fit)
    request_timeout_s: float = 30.0  # an analysis still running after this answers 504
    video_timeout_s: float = 120.0  # the same for /v1/analyze/video
    workers: int = 2  # inference threads (the event loop never runs a model)
    max_pending: int = 32  # analyses queued or running at once; more answer 503 at once
    max_cached_models: int = 4  # expression models kept loaded (least recently used is dropped)
    preload: bool = True  # load the default model at start-up rather than on the first request
    jpeg_quality: int = 85  # quality of the annotated image returned with ?annotate=true

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_video_bytes", "max_video_frames", "workers",
                     "max_pending", "max_cached_models"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServiceConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_video_seconds", "request_timeout_s", "video_timeout_s"):
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"ServiceConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.backend not in ("onnx", "torch"):
            raise ValueError(f"ServiceConfig.backend must be 'onnx' or 'torch', got {self.backend!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"ServiceConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body the server reads for an image (base64 JSON is 4/3 of the image, plus slack)."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024

    @property
    def max_video_body_bytes(self) -> int:
        """Largest request body the server reads for a video upload (multipart framing included)."""
        return self.max_video_bytes + 64 * 1024
