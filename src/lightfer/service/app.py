"""The FastAPI application: ``POST /v1/analyze``, ``POST /v1/analyze/video``, ``GET /v1/models``,
``GET /health``, offline OpenAPI docs at ``/docs`` and the web page at ``/``.

Requests are parsed on the event loop; decoding and inference run on a small thread pool with a
deadline (504 when passed) and an admission limit (503 when full), so the loop never blocks and no
request hangs. Models are loaded once per name (:class:`~lightfer.service.engine.ModelCache`).
"""
from __future__ import annotations

import asyncio
import base64
import functools
import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from lightfer import __version__
from lightfer.service.config import ServiceConfig
from lightfer.service.engine import AnalyzeOptions, ModelCache, ServiceError, default_factory
from lightfer.service.inputs import decode_image, read_image_body, save_video_body
from lightfer.service.limits import BodySizeLimit
from lightfer.service.video import analyze_clip

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_PATH = "/v1/analyze"
VIDEO_PATH = "/v1/analyze/video"

_ERRORS = {
    400: {"description": "Body could not be parsed or the image/video could not be decoded"},
    404: {"description": "Unknown model name"},
    413: {"description": "Upload, image pixel count or clip duration over the limit"},
    415: {"description": "Unsupported content type or file type"},
    503: {"description": "Too many analyses pending; retry later"},
    504: {"description": "The analysis took longer than the request timeout"},
}
_MULTIPART_FILE = {
    "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": _MULTIPART_FILE,
            "application/json": {
                "schema": {"type": "object", "required": ["image"], "properties": {
                    "image": {"type": "string", "description": "base64 image or data: URL"},
                    "name": {"type": "string", "description": "source name echoed in the result"}}}
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": _MULTIPART_FILE,
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _options(score_threshold: float | None, min_face_size: float | None, max_faces: int | None,
             tta: bool | None) -> AnalyzeOptions:
    return AnalyzeOptions(score_threshold=score_threshold, min_face_size=min_face_size, max_faces=max_faces, tta=tta)


def _new_app(**kwargs: Any) -> FastAPI:
    """FastAPI with Swagger UI / ReDoc served from the installed ``fastapi-offline`` copy (no CDN)."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:  # pragma: no cover - the serve extra installs it
        log.warning("fastapi-offline is not installed: /docs will load Swagger UI from a CDN")
        return FastAPI(**kwargs)
    return FastAPIOffline(**kwargs)


def create_app(config: ServiceConfig | None = None, *, models: ModelCache | None = None) -> FastAPI:
    """Build the service.

    Args:
        config: limits and defaults (``ServiceConfig()`` when None).
        models: where analyzers come from (tests pass a cache over small fakes).
    """
    config = config or ServiceConfig()
    if models is None:
        factory = functools.partial(default_factory, backend=config.backend, threads=config.threads,
                                    tta=config.tta)
        models = ModelCache(factory, max_models=config.max_cached_models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="lightfer-infer")
        app.state.started = time.time()
        if config.preload:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(app.state.executor, models.get, config.default_model)
            except ServiceError as exc:
                app.state.load_error = exc.message
                log.error("%s", exc.message)
        try:
            yield
        finally:
            app.state.executor.shutdown(wait=False, cancel_futures=True)

    app = _new_app(
        title="lightfer",
        version=__version__,
        description="Find every face in an image or a short clip and tell each one's facial expression. "
        "The web page is at `/`.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.models = models
    app.state.pending = 0
    app.state.load_error = None
    app.state.executor = None
    app.add_middleware(BodySizeLimit, limit_for=lambda path: _body_limit(config, path))

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    async def run_job(fn: Callable[[float], Any], timeout: float) -> Any:
        """``fn(deadline)`` on the inference pool; 503 when too many are pending, 504 after ``timeout``."""
        if app.state.executor is None:  # used without the lifespan (e.g. TestClient outside `with`)
            app.state.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="lightfer-infer")
        if app.state.pending >= config.max_pending:
            raise ServiceError(503, f"server busy: {app.state.pending} analyses pending; retry later",
                               headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        app.state.pending += 1
        deadline = time.monotonic() + timeout

        def done(_: Any) -> None:
            try:
                loop.call_soon_threadsafe(_release)
            except RuntimeError:  # the loop closed while an abandoned analysis finished (shutdown)
                pass

        future = app.state.executor.submit(fn, deadline)
        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise ServiceError(504, f"the analysis took longer than the {timeout:g} s request timeout") from exc

    def _release() -> None:
        app.state.pending -= 1

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", summary="Liveness and readiness")
    async def health() -> JSONResponse:
        """``status`` is ``ok``, or ``error`` (HTTP 503) when the default model failed to load."""
        loaded = models.loaded()
        failed = app.state.load_error is not None and config.default_model not in loaded  # a retry may load it
        body = {
            "status": "error" if failed else "ok",
            "version": __version__,
            "default_model": config.default_model,
            "loaded_models": loaded,
            "pending": app.state.pending,
            "uptime_s": round(time.time() - getattr(app.state, "started", time.time()), 1),
        }
        if failed:
            body["error"] = app.state.load_error
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get("/v1/models", summary="Expression models this server can use")
    async def list_models() -> dict[str, Any]:
        """Every model a request may name with ``?model=``, with its labels and input size."""
        loaded = set(models.loaded())
        return {"default": config.default_model,
                "models": [_describe(name, name in loaded, config.tta) for name in models.available()]}

    @app.post(IMAGE_PATH, summary="Faces and expressions in one image", openapi_extra=_IMAGE_BODY, responses=_ERRORS)
    async def analyze(
        request: Request,
        model: str | None = Query(None, description="expression model (see /v1/models); default: the server's"),
        score_threshold: float | None = Query(None, ge=0.0, le=1.0, description="minimum face detection score"),
        min_face_size: float | None = Query(None, ge=0.0, description="drop faces smaller than this, px"),
        max_faces: int | None = Query(None, ge=1, le=1000, description="keep the highest-scoring faces only"),
        tta: bool | None = Query(None, description="average each face with its mirror image (about twice the "
                                 "classify time); default: the model's own setting (see /v1/models)"),
        annotate: bool = Query(False, description="also return the annotated picture as a base64 JPEG data URL"),
    ) -> JSONResponse:
        """Upload an image (multipart field ``file``, JSON ``{"image": base64}`` or a raw image body);
        the answer is the JSON of ``lightfer predict`` for that image."""
        name = model or config.default_model
        models.check(name)
        opts = _options(score_threshold, min_face_size, max_faces, tta)
        data, source = await read_image_body(request, config)

        def job(deadline: float) -> dict[str, Any]:
            t0 = time.perf_counter()
            image = decode_image(data, config, source)
            decode_ms = (time.perf_counter() - t0) * 1e3
            loaded = models.get(name)
            result = loaded.analyze(image, opts, deadline)
            result.source = source
            result.timings = {"decode": decode_ms, **{k: v for k, v in result.timings.items() if k != "decode"}}
            out = result.to_dict()
            if annotate:
                out["annotated_image"] = _annotated_jpeg(image, result, config.jpeg_quality)
            return out

        out = await run_job(job, config.request_timeout_s)
        return JSONResponse(out, headers={"X-Lightfer-Model": name})

    @app.post(VIDEO_PATH, summary="Per-frame timeline and per-person summary of a short clip",
              openapi_extra=_VIDEO_BODY, responses=_ERRORS)
    async def analyze_video(
        request: Request,
        model: str | None = Query(None, description="expression model (see /v1/models)"),
        score_threshold: float | None = Query(None, ge=0.0, le=1.0, description="minimum face detection score"),
        min_face_size: float | None = Query(None, ge=0.0, description="drop faces smaller than this, px"),
        max_faces: int | None = Query(None, ge=1, le=1000, description="keep the highest-scoring faces per frame"),
        tta: bool | None = Query(None, description="average each face with its mirror image (about twice the "
                                 "classify time); default: the model's own setting (see /v1/models)"),
        stride: int | None = Query(None, ge=1, le=1000, description="analyse every N-th frame"),
        fps: float | None = Query(None, gt=0.0, le=120.0, description="analyse about this many frames per second"),
    ) -> JSONResponse:
        """Upload a clip (multipart field ``file`` or a raw ``video/*`` body) of at most
        ``max_video_seconds``; frames are tracked, so faces carry ``track_id``."""
        name = model or config.default_model
        models.check(name)
        opts = _options(score_threshold, min_face_size, max_faces, tta)
        path, source = await save_video_body(request, config)
        try:
            out = await run_job(
                lambda deadline: analyze_clip(models.get(name), path, source, config, opts,
                                              stride=stride, fps=fps, deadline=deadline),
                config.video_timeout_s,
            )
        finally:
            os.unlink(path)  # a worker still reading it keeps its open handle (POSIX)
        return JSONResponse(out, headers={"X-Lightfer-Model": name})

    return app


def _body_limit(config: ServiceConfig, path: str) -> int | None:
    if path == VIDEO_PATH:
        return config.max_video_body_bytes
    if path == IMAGE_PATH:
        return config.max_body_bytes
    return 64 * 1024


def _describe(name: str, loaded: bool, tta: bool | None = None) -> dict[str, Any]:
    """One entry of ``GET /v1/models``; ``tta_flip`` is what a request without ``?tta=`` gets (``tta``:
    the server's ``--tta`` / ``--no-tta``, None for the model's own setting); ``int8``: the model ships an int8
    quantisation, which the ONNX Runtime backend serves."""
    info: dict[str, Any] = {"name": name, "loaded": loaded}
    try:
        from lightfer.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except (ImportError, KeyError):
        return info
    info.update(classes=list(cfg.classes), input_size=cfg.input_size, in_chans=cfg.in_chans,
                description=cfg.description, weights=cfg.weights, license=cfg.license,
                tta_flip=bool(cfg.tta_flip if tta is None else tta), int8=bool(cfg.int8_onnx))
    return info


def _annotated_jpeg(image: Any, result: Any, quality: int) -> str:
    """The annotated picture as a ``data:image/jpeg;base64,...`` URL."""
    from PIL import Image

    from lightfer.draw import annotate

    buf = io.BytesIO()
    Image.fromarray(annotate(image, result)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
