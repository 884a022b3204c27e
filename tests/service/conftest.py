"""Fixtures for the service tests: clients of an app whose models are fakes (see service_fakes.py)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .service_fakes import FakeAnalyzer

if importlib.util.find_spec("fastapi") is None:  # the serve extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]


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


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """URL of a real ``lightfer serve`` (default model) started in a child process on a free loopback port."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'lightfer[serve]'")
    from lightfer.service.load_test import free_port, start_server, wait_healthy

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = start_server(port, ["--log-level", "warning", "--workers", "2"], threads=1, log_path=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=120)
    except RuntimeError as exc:
        proc.kill()
        pytest.fail(f"{exc}; server log:\n{log.read_text()[-3000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:
        proc.kill()


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut, tmp_path_factory):
    """scikit-image's astronaut (one smiling face) as a JPEG file."""
    from .service_fakes import encode

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    path.write_bytes(encode(astronaut))
    return path
