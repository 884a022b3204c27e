"""HTTP API through the test client, over a fake analyzer: every endpoint and every error answer."""
from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from .service_fakes import CLASSES, encode


def post_file(client, data: bytes, name: str = "x.jpg", ctype: str = "image/jpeg", query: str = ""):
    return client.post(f"/v1/analyze{query}", files={"file": (name, data, ctype)})


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for w in words:
        assert w.lower() in detail.lower(), detail


# ---- happy paths -------------------------------------------------------------------------------
def test_health_and_models(make_client):
    client, built = make_client()
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["default_model"] == "fake"
    assert health["loaded_models"] == ["fake"]  # preloaded at start-up
    models = client.get("/v1/models").json()
    assert models["default"] == "fake"
    assert [(m["name"], m["loaded"]) for m in models["models"]] == [("fake", True), ("other", False)]


def test_health_reports_a_model_that_failed_to_load(make_client):
    client, _ = make_client(fail_load=True)
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "error" and "corrupt" in r.json()["error"]
    assert_error(post_file(client, encode(np.zeros((8, 8, 3), np.uint8))), 500, "could not load model")


def test_analyze_multipart_matches_frame_result_json(make_client, gray_image):
    client, built = make_client()
    r = post_file(client, encode(gray_image), name="gray.jpg")
    assert r.status_code == 200 and r.headers["x-lightfer-model"] == "fake"
    body = r.json()
    assert set(body) == {"source", "width", "height", "faces", "timings_ms", "error"}
    assert body["source"] == "gray.jpg" and (body["width"], body["height"]) == (160, 120)
    assert [f["score"] for f in body["faces"]] == [0.9, 0.6]  # the detector's default threshold 0.5
    assert all(f["label"] == "happy" and set(f["probs"]) == set(CLASSES) for f in body["faces"])
    assert body["faces"][0]["box"] == [8.0, 6.0, 72.0, 54.0]
    assert body["timings_ms"]["decode"] >= 0 and list(body["timings_ms"])[0] == "decode"
    assert built["fake"].calls == 1


def test_analyze_json_base64_data_url_and_raw_body(make_client, gray_image):
    client, _ = make_client()
    png = encode(gray_image, "PNG")
    b64 = base64.b64encode(png).decode()
    data_url = {"image": "data:image/png;base64," + b64, "name": "a.png"}
    for payload, source in (({"image": b64}, "base64"), (data_url, "a.png")):
        r = client.post("/v1/analyze", json=payload)
        assert r.status_code == 200, r.text
        assert r.json()["source"] == source and len(r.json()["faces"]) == 2
    r = client.post("/v1/analyze", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 200 and len(r.json()["faces"]) == 2


def test_query_thresholds_apply_per_request_only(make_client, gray_image):
    client, built = make_client()
    data = encode(gray_image)
    count = lambda q: len(post_file(client, data, query=q).json()["faces"])  # noqa: E731
    assert count("?score_threshold=0.2") == 3
    assert count("?score_threshold=0.7") == 1
    assert count("") == 2  # the override did not stick to the shared model
    assert count("?score_threshold=0.2&max_faces=1") == 1
    assert count("?score_threshold=0.2&min_face_size=20") == 2  # the 16x12 px face goes
    assert built["fake"].detector.cfg.score_threshold == 0.5


def test_tta_query_applies_per_request_only(make_client, gray_image):
    """``?tta=true|false`` switches the classifier's flip TTA for that request and is restored after it."""
    client, built = make_client()
    data = encode(gray_image)
    top = lambda q: max(post_file(client, data, query=q).json()["faces"][0]["probs"].values())  # noqa: E731
    assert top("?tta=true") == pytest.approx(0.7)
    assert top("") == pytest.approx(0.8) and top("?tta=false") == pytest.approx(0.8)
    assert built["fake"].classifier.tta_flip is False
    assert post_file(client, data, query="?tta=maybe").status_code == 422


def test_server_wide_tta_reaches_the_loaded_model_and_v1_models():
    """``lightfer serve --no-tta`` / ``--tta`` sets every loaded model's flip TTA and what /v1/models reports;
    without either option each model keeps its own ``tta_flip``."""
    import argparse

    from lightfer.cli import serve
    from lightfer.defaults import DEFAULT_MODEL
    from lightfer.models import get_pretrained_cfg
    from lightfer.service.app import _describe
    from lightfer.service.engine import default_factory

    root = argparse.ArgumentParser()
    serve.register(root.add_subparsers())
    tta = lambda *a: serve._config(root.parse_args(["serve", *a])).tta  # noqa: E731
    assert tta("--no-tta") is False and tta("--tta") is True and tta() is None
    own = bool(get_pretrained_cfg(DEFAULT_MODEL).tta_flip)  # each model keeps its own setting without an option
    assert _describe(DEFAULT_MODEL, False)["tta_flip"] is own
    assert _describe(DEFAULT_MODEL, False, not own)["tta_flip"] is (not own)
    with_tta = "shufflenet_v2_x1_0_fer2013"  # a shipped model served with flip TTA
    assert _describe(with_tta, False)["tta_flip"] is True and _describe(with_tta, False, False)["tta_flip"] is False
    assert _describe("shufflenet_v2_x1_0_fer2013", False)["int8"] is True
    assert _describe("fer_mini_xception", False)["int8"] is False
    assert default_factory(with_tta, backend="torch", tta=False).classifier.tta_flip is False
    assert default_factory(with_tta, backend="torch").classifier.tta_flip is True
    assert default_factory(DEFAULT_MODEL, backend="torch").classifier.tta_flip is own


def test_model_query_loads_each_model_once(make_client, gray_image):
    client, built = make_client()
    for _ in range(3):
        assert post_file(client, encode(gray_image), query="?model=other").status_code == 200
    assert set(built) == {"fake", "other"} and built["other"].calls == 3
    assert {m["name"]: m["loaded"] for m in client.get("/v1/models").json()["models"]}["other"] is True


def test_annotate_returns_a_jpeg_of_the_same_size(make_client, gray_image):
    pytest.importorskip("lightfer.draw")
    client, _ = make_client()
    body = post_file(client, encode(gray_image), query="?annotate=true").json()
    head, _, b64 = body["annotated_image"].partition(",")
    assert head == "data:image/jpeg;base64"
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    assert picture.shape == gray_image.shape
    assert np.abs(picture.astype(int) - 128).max() > 60  # boxes were drawn on the gray picture
    assert "annotated_image" not in post_file(client, encode(gray_image)).json()


def test_exif_rotation_is_applied_before_analysis(make_client):
    client, _ = make_client()
    img = Image.fromarray(np.full((40, 100, 3), 128, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    body = post_file(client, buf.getvalue()).json()
    assert (body["width"], body["height"]) == (40, 100)


def test_concurrent_requests_share_one_model_safely(make_client, gray_image):
    client, built = make_client(delay=0.02, workers=4)
    app = client.app
    data = encode(gray_image)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            reqs = [ac.post("/v1/analyze", files={"file": ("g.jpg", data, "image/jpeg")},
                            params={"score_threshold": 0.2 if i % 2 else 0.7}) for i in range(16)]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    # each answer used its own threshold although they all ran on the same model
    assert [len(r.json()["faces"]) for r in responses] == [1, 3] * 8
    fake = built["fake"]
    assert fake.calls == 16 and fake.max_running == 1


def test_page_docs_and_openapi_work_offline(make_client):
    client, _ = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="file"', 'id="canvas"', 'id="face-count"', 'id="webcam"', 'id="faces"'):
        assert element in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert client.get("/static/app.js").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    scripts = [s.split('"')[0] for s in docs.text.split('src="')[1:]]
    assert scripts and all(s.startswith("/") for s in scripts)
    for s in scripts:
        asset = client.get(s)
        assert asset.status_code == 200 and len(asset.content) > 100_000  # the real Swagger UI bundle
    spec = client.get("/openapi.json").json()
    assert {"/v1/analyze", "/v1/analyze/video", "/v1/models", "/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]


# ---- errors --------------------------------------------------------------------------------------
def test_upload_too_large(make_client, gray_image):
    client, built = make_client(max_upload_bytes=2000)
    noisy = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert_error(post_file(client, encode(noisy, "PNG")), 413, "too large")
    # a chunked body (no Content-Length) is counted as it streams and cut at the body limit
    r = client.post("/v1/analyze", content=iter([b"\xff\xd8\xff" + b"0" * 1000] * 100),
                    headers={"content-type": "image/jpeg"})
    assert_error(r, 413, "request body too large")
    # base64 JSON whose decoded image is over the limit
    r = client.post("/v1/analyze", json={"image": base64.b64encode(b"\xff\xd8\xff" + b"0" * 2100).decode()})
    assert_error(r, 413, "too large")
    assert built["fake"].calls == 0
    assert post_file(client, encode(gray_image)).status_code == 200  # small ones still pass


def test_too_many_pixels(make_client):
    client, built = make_client(max_pixels=100_000)
    big = encode(np.zeros((400, 300, 3), np.uint8), "PNG")  # 120000 px but a small file
    assert_error(post_file(client, big, "big.png", "image/png"), 413, "400", "120000", "100000")
    assert built["fake"].calls == 0


@pytest.mark.parametrize("data, ctype, status, words", [
    (b"%PDF-1.4 not an image at all", "image/jpeg", 415, ("not an image",)),
    (b"hello", "text/plain", 415, ("text/plain",)),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image/jpeg", 400, ("could not decode",)),
    (b"", "image/jpeg", 400, ("empty",)),
])
def test_bad_uploads(make_client, data, ctype, status, words):
    client, built = make_client()
    assert_error(post_file(client, data, "f.jpg", ctype), status, *words)
    assert built["fake"].calls == 0


def test_truncated_png_is_400(make_client, gray_image):
    client, _ = make_client()
    png = encode(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8), "PNG")
    assert_error(post_file(client, png[: len(png) // 2], "cut.png", "image/png"), 400, "cut.png", "decode")


@pytest.mark.parametrize("body, ctype, status, words", [
    (b"{not json", "application/json", 400, ("not valid json",)),
    (b'{"picture": "abc"}', "application/json", 400, ('"image"',)),
    (b'{"image": "@@@not base64@@@"}', "application/json", 400, ("base64",)),
    (b'{"image": "data:image/png,abc"}', "application/json", 400, ("base64",)),
    (b"a=b", "application/x-www-form-urlencoded", 415, ("unsupported content type",)),
    (b"whatever", "", 415, ("unsupported content type",)),
])
def test_bad_bodies(make_client, body, ctype, status, words):
    client, _ = make_client()
    headers = {"content-type": ctype} if ctype else {}
    assert_error(client.post("/v1/analyze", content=body, headers=headers), status, *words)


def test_multipart_without_a_file(make_client):
    client, _ = make_client()
    assert_error(client.post("/v1/analyze", data={"name": "x"}, files={}), 415)  # urlencoded form
    r = client.post("/v1/analyze", files={"name": (None, "only a text field")})
    assert_error(r, 400, "no file")


def test_unknown_model_and_bad_query_values(make_client, gray_image):
    client, built = make_client()
    assert_error(post_file(client, encode(gray_image), query="?model=nope"), 404, "nope", "fake, other")
    for q in ("?score_threshold=1.5", "?score_threshold=abc", "?max_faces=0", "?min_face_size=-1"):
        r = post_file(client, encode(gray_image), query=q)
        assert r.status_code == 422, q
    assert built["fake"].calls == 0


def test_timeout_answers_504_and_the_server_recovers(make_client, gray_image):
    import time

    client, built = make_client(delay=0.6, request_timeout_s=0.15, workers=1)
    data = encode(gray_image)
    assert_error(post_file(client, data), 504, "timeout")
    assert client.get("/health").status_code == 200  # the event loop was never blocked
    built["fake"].detector.delay = 0.0
    for _ in range(50):  # the abandoned analysis finishes in its thread, then requests pass again
        r = post_file(client, data)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200


def test_requests_that_timed_out_in_the_queue_never_run(make_client, gray_image):
    client, built = make_client(delay=0.5, request_timeout_s=0.2, workers=1)
    data = encode(gray_image)

    async def two() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            send = lambda: ac.post("/v1/analyze", files={"file": ("a.jpg", data, "image/jpeg")})  # noqa: E731
            return list(await asyncio.gather(send(), send()))

    assert [r.status_code for r in asyncio.run(two())] == [504, 504]
    import time

    time.sleep(0.6)
    assert built["fake"].calls == 1  # the second one was dropped, not run after its client left


def test_full_queue_answers_503(make_client, gray_image):
    client, built = make_client(delay=0.3, max_pending=1, workers=1)
    data = encode(gray_image)

    async def two() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            first = asyncio.create_task(ac.post("/v1/analyze", files={"file": ("a.jpg", data, "image/jpeg")}))
            await asyncio.sleep(0.1)
            second = await ac.post("/v1/analyze", files={"file": ("b.jpg", data, "image/jpeg")})
            return [await first, second]

    first, second = asyncio.run(two())
    assert first.status_code == 200
    assert_error(second, 503, "busy")
    assert second.headers["retry-after"] == "1"


def test_other_paths_refuse_large_bodies(make_client):
    client, _ = make_client()
    r = client.post("/health", content=b"0" * 100_000, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 413
    assert json.loads(r.content)["detail"]


# ---- the model cache and the configuration --------------------------------------------------------
def test_model_cache_loads_once_and_drops_the_least_recently_used():
    import threading
    import time

    from lightfer.service.engine import ModelCache, ServiceError

    loads: list[str] = []

    def factory(name: str):
        loads.append(name)
        time.sleep(0.05)  # a slow load, so that concurrent first requests overlap
        return object()

    cache = ModelCache(factory, available=lambda: ["a", "b", "c"], max_models=2)
    threads = [threading.Thread(target=cache.get, args=("a",)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["a"]
    cache.get("b")
    cache.get("a")  # a becomes the most recently used
    cache.get("c")
    assert cache.loaded() == ["a", "c"] and loads == ["a", "b", "c"]
    with pytest.raises(ServiceError) as err:
        cache.get("zzz")
    assert err.value.status == 404 and "a, b, c" in err.value.message


def test_config_and_cli_refuse_bad_limits():
    from lightfer.cli import main
    from lightfer.service import ServiceConfig

    for bad in ({"workers": 0}, {"max_upload_bytes": 0}, {"request_timeout_s": 0.0}, {"backend": "tpu"},
                {"jpeg_quality": 101}):
        with pytest.raises(ValueError):
            ServiceConfig(**bad)
    assert main(["serve", "--workers", "0"]) == 2
    assert main(["serve", "--timeout", "-1"]) == 2
    with pytest.raises(SystemExit):
        main(["serve", "--no-such-option"])
