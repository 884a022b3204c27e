"""Models behind the service: loaded once per name, cached, and shared safely by concurrent requests.

Each loaded :class:`~lightfer.Analyzer` has its own lock, so one model analyses one image at a
time (its detector and classifier keep per-call state such as timings); requests for different
models run in parallel on the worker threads. Per-request thresholds are applied by swapping the
detector's frozen config (and ``tta`` the classifier's ``tta_flip``) under that lock, so they change
nothing for other requests.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lightfer.structures import FrameResult

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error answered to the client as JSON ``{"detail": message, "status": status}``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True, kw_only=True)
class AnalyzeOptions:
    """Per-request overrides of the detector's post-processing and of the classifier's flip TTA
    (None keeps the model's default)."""

    score_threshold: float | None = None  # keep faces scoring at least this, in [0, 1]
    min_face_size: float | None = None  # drop faces whose shorter side is smaller, px
    max_faces: int | None = None  # keep the highest-scoring faces only
    tta: bool | None = None  # average each face with its mirror (None: the model's tta_flip)

    def overrides(self) -> dict[str, Any]:
        """The detector fields that were set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "tta"}


def filter_faces(result: FrameResult, options: AnalyzeOptions) -> FrameResult:
    """Apply ``options`` to an already computed result (for analyzers without a detector config)."""
    faces = sorted(result.faces, key=lambda f: -f.score)
    if options.score_threshold is not None:
        faces = [f for f in faces if f.score >= options.score_threshold]
    if options.min_face_size is not None:
        faces = [f for f in faces if f.size >= options.min_face_size]
    if options.max_faces is not None:
        faces = faces[: options.max_faces]
    return dataclasses.replace(result, faces=faces)


class LoadedModel:
    """One analyzer and the lock that serialises its use."""

    def __init__(self, name: str, analyzer: Any) -> None:
        self.name = name
        self.analyzer = analyzer
        self.lock = threading.Lock()
        self.requests = 0

    def run(self, fn: Callable[[Any], Any], options: AnalyzeOptions, deadline: float | None = None) -> Any:
        """``fn(analyzer)`` under this model's lock with ``options`` applied to its detector.

        Raises:
            TimeoutError: the lock was obtained only after ``deadline`` (``time.monotonic()``):
                the client has been answered 504 already, so the work is skipped.
        """
        with self.lock:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("deadline passed while waiting for the model")
            self.requests += 1
            overrides = options.overrides()
            detector = getattr(self.analyzer, "detector", None)
            classifier = getattr(self.analyzer, "classifier", None)
            cfg = getattr(detector, "cfg", None)
            tta = getattr(classifier, "tta_flip", None)
            if overrides and dataclasses.is_dataclass(cfg):
                detector.cfg = dataclasses.replace(cfg, **overrides)
            if options.tta is not None and tta is not None:
                classifier.tta_flip = options.tta
            try:
                return fn(self.analyzer)
            finally:
                if detector is not None and cfg is not None:
                    detector.cfg = cfg
                if tta is not None:
                    classifier.tta_flip = tta

    def analyze(self, image: np.ndarray, options: AnalyzeOptions, deadline: float | None = None) -> FrameResult:
        """Faces and expressions in one RGB uint8 image ``(H, W, 3)``."""
        result = self.run(lambda a: a(image), options, deadline)
        detector_cfg = getattr(getattr(self.analyzer, "detector", None), "cfg", None)
        if options.overrides() and not dataclasses.is_dataclass(detector_cfg):
            result = filter_faces(result, options)
        return result

    @property
    def classes(self) -> list[str]:
        """Expression labels of the model, in output order."""
        classes = getattr(self.analyzer, "classes", None)
        return [str(c) for c in classes] if classes is not None else []


def default_factory(name: str, *, backend: str = "onnx", threads: int | None = None,
                    tta: bool | None = None) -> Any:
    """Build the analyzer for model ``name`` (the service's default loader; ``tta`` None keeps the
    model's ``tta_flip``)."""
    from lightfer.pipeline import Analyzer

    return Analyzer(model=name, backend=backend, threads=threads, tta=tta)


def default_available() -> list[str]:
    """Models the service may load: the registered ones that have pretrained weights."""
    from lightfer.models import list_models

    return list_models(pretrained=True)


class ModelCache:
    """Analyzers by model name, built on first use by ``factory`` and kept (LRU, ``max_models``)."""

    def __init__(
        self,
        factory: Callable[[str], Any] = default_factory,
        available: Callable[[], list[str]] = default_available,
        max_models: int = 4,
    ) -> None:
        self._factory = factory
        self._available = available
        self._max_models = max_models
        self._names: list[str] | None = None  # available(), asked once: the registry is fixed at run time
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _models
        self._loading: dict[str, threading.Lock] = {}  # one loader at a time per name

    def available(self) -> list[str]:
        """Names a request may ask for."""
        if self._names is None:
            self._names = list(self._available())
        return list(self._names)

    def loaded(self) -> list[str]:
        """Names loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    def check(self, name: str) -> None:
        """Raise ``ServiceError(404)`` unless ``name`` is an available model."""
        names = self.available()
        if name not in names:
            from lightfer.models.shipped import retired_note

            raise ServiceError(404, retired_note(name)
                               or f"unknown model {name!r}; available: {', '.join(names) or 'none'}")

    def get(self, name: str) -> LoadedModel:
        """The loaded model ``name``, loading it on first use (blocking; call from a worker thread)."""
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            loading = self._loading.setdefault(name, threading.Lock())
        self.check(name)
        with loading:
            with self._lock:
                if name in self._models:
                    return self._models[name]
            t0 = time.perf_counter()
            try:
                analyzer = self._factory(name)
            except Exception as exc:  # a broken model must answer 500 with its reason, not kill the server
                log.exception("loading model %s failed", name)
                raise ServiceError(500, f"could not load model {name!r}: {exc}") from exc
            log.info("loaded model %s in %.1f s", name, time.perf_counter() - t0)
            model = LoadedModel(name, analyzer)
            with self._lock:
                self._models[name] = model
                while len(self._models) > self._max_models:
                    dropped, _ = self._models.popitem(last=False)
                    log.info("dropped model %s from the cache", dropped)
            return model
