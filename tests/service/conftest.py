"""Fixtures for the service tests: clients of an app whose models are fakes (see service_fakes.py)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'lightfer[serve]'")

from service_fakes import FakeAnalyzer  # noqa: E402


@pytest.fixture()
def gray_image() -> np.ndarray:
    """(120, 160, 3) mid-gray image: the fake labels it 'happy'."""
    return np.full((120, 160, 3), 128, dtype=np.uint8)


@pytest.fixture()
def make_client():
    """``make_client(**config_overrides, delay=0.0) -> (TestClient, {name: FakeAnalyzer})``."""
    from fastapi.testclient import TestClient

    from lightfer.service import ServiceConfig, create_app
    from lightfer.service.engine import ModelCache

    clients = []

    def make(delay: float = 0.0, fail_load: bool = False, **overrides):
        built: dict[str, FakeAnalyzer] = {}

        def factory(name: str) -> FakeAnalyzer:
            if fail_load:
                raise RuntimeError("weights file is corrupt")
            built[name] = FakeAnalyzer(name, delay=delay)
            return built[name]

        cache = ModelCache(factory=factory, available=lambda: ["fake", "other"], max_models=2)
        config = ServiceConfig(**{"default_model": "fake", **overrides})
        client = TestClient(create_app(config, models=cache), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, built

    yield make
    for c in clients:
        c.__exit__(None, None, None)
