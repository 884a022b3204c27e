"""End to end in a real headless Chromium: the page at ``/`` against a real ``lightfer serve``.

Needs Debian's chromium (``scripts/install_browser.sh``) and the playwright package (dev extra);
Playwright drives the system browser and never downloads one. Every request the page makes to a
host other than the server is blocked and recorded, so the page and ``/docs`` are proven offline.
Set ``LIGHTFER_SCREENSHOT=1`` (or a path) to save the page to ``docs/img/service_page.png``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("LIGHTFER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",  # a synthetic webcam
]
HAPPY_RGB = (245, 158, 11)  # COLORS.happy in static/app.js


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory, request):
    """A fresh Chromium profile; yields (context, list of blocked off-server URLs, server URL)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/install_browser.sh (Debian package 'chromium')")
    live_server = request.getfixturevalue("live_server")  # started only when a browser is there
    blocked: list[str] = []
    server_host = urlparse(live_server).netloc
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1280, "height": 900}, permissions=["camera"],
        )

        def guard(route) -> None:
            if urlparse(route.request.url).netloc == server_host or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        yield context, blocked, live_server
        context.close()


@pytest.fixture()
def page(browser_context):
    context, blocked, live_server = browser_context
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not blocked, f"the page tried to reach other hosts: {blocked}"
    page.close()


def canvas_pixel(page, x: float, y: float) -> tuple[int, int, int]:
    return tuple(page.evaluate(
        "([x, y]) => Array.from(document.getElementById('canvas').getContext('2d')"
        ".getImageData(Math.floor(x), Math.floor(y), 1, 1).data.slice(0, 3))", [x, y]))


def test_upload_draws_the_face_and_its_chart(page, astronaut_jpeg):
    from lightfer.defaults import DEFAULT_MODEL

    assert page.locator("#model option:checked").inner_text().startswith(DEFAULT_MODEL)
    page.set_input_files("#file", str(astronaut_jpeg))
    page.wait_for_selector("body[data-state=done]", timeout=30_000)
    assert page.inner_text("#face-count") == "1"
    result = page.evaluate("window.lightfer.lastResult")
    assert result["source"] == "astronaut.jpg" and len(result["faces"]) == 1
    face = result["faces"][0]
    assert face["label"] == "happy"
    # the chart: one card, one bar per class, widths from the probabilities, the top one marked
    cards = page.locator(".face")
    assert cards.count() == 1 and cards.first.get_attribute("data-label") == "happy"
    bars = page.locator(".face .bar")
    assert bars.count() == len(face["probs"]) == 7
    widths = [float(bars.nth(i).evaluate("e => e.style.width").rstrip("%")) for i in range(bars.count())]
    assert sum(widths) == pytest.approx(100.0, abs=1.0)
    assert page.locator(".bar-row.top").get_attribute("data-label") == "happy"
    # the box is drawn on the canvas, at the coordinates of the JSON, in the label's colour
    assert page.evaluate("[canvas.width, canvas.height]") == [512, 512]
    x1, y1, x2, y2 = face["box"]
    for x, y in ((x1, (y1 + y2) / 2), (x2, (y1 + y2) / 2), ((x1 + x2) / 2, y2)):
        px = canvas_pixel(page, x, y)
        assert all(abs(a - b) <= 40 for a, b in zip(px, HAPPY_RGB)), (x, y, px)
    inside = canvas_pixel(page, (x1 + x2) / 2, (y1 + y2) / 2)
    assert not all(abs(a - b) <= 40 for a, b in zip(inside, HAPPY_RGB))  # the face itself is not painted over
    shot = os.environ.get("LIGHTFER_SCREENSHOT")
    if shot:
        path = REPO / "docs" / "img" / "service_page.png" if shot in ("1", "true", "yes") else Path(shot)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)


def test_threshold_slider_reaches_the_server(page, astronaut_jpeg):
    page.fill("#threshold", "0.95")  # range inputs accept fill()
    page.set_input_files("#file", str(astronaut_jpeg))
    page.wait_for_selector("body[data-state=done]", timeout=30_000)
    assert page.inner_text("#face-count") == "1"  # the astronaut's face scores 0.9997
    assert page.inner_text("#threshold-value") == "0.95"


def test_mirror_averaging_choice_reaches_the_server(page, astronaut_jpeg, tmp_path):
    """The page's TTA choice is sent as ``?tta=``: on and off give different probabilities for the same face."""
    happy = {}
    for choice in ("true", "false"):
        copy = tmp_path / f"astronaut_{choice}.jpg"  # a new file each time, so the input fires "change"
        copy.write_bytes(astronaut_jpeg.read_bytes())
        page.select_option("#tta", choice)
        page.evaluate("document.body.dataset.state = 'idle'")
        page.set_input_files("#file", str(copy))
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        happy[choice] = json.loads(page.text_content("#result-json"))["faces"][0]["probs"]["happy"]
    assert happy["true"] != pytest.approx(happy["false"], abs=1e-6)


def test_dropped_file_is_analysed(page, astronaut_jpeg):
    import base64

    b64 = base64.b64encode(astronaut_jpeg.read_bytes()).decode()
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
    }""", b64)
    page.wait_for_selector("body[data-state=done]", timeout=30_000)
    assert page.inner_text("#face-count") == "1"
    assert page.evaluate("window.lightfer.lastResult.source") == "dropped.jpg"


def test_bad_file_shows_the_server_error(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]", timeout=15_000)
    message = page.inner_text("#error")
    assert page.locator("#error").is_visible() and "415" in message and "not an image" in message


def test_webcam_sends_frames_until_stopped(page):
    page.click("#webcam")
    page.wait_for_function("window.lightfer.framesSent >= 3", timeout=30_000)
    assert "frame" in page.inner_text("#webcam-status")
    assert page.evaluate("window.lightfer.lastResult.width") > 0
    assert page.inner_text("#face-count").isdigit()
    page.click("#webcam")
    page.wait_for_selector("body[data-state=done]", timeout=5_000)
    sent = page.evaluate("window.lightfer.framesSent")
    page.wait_for_timeout(1000)
    assert page.evaluate("window.lightfer.framesSent") <= sent + 1  # at most the one in flight


def test_api_docs_render_without_a_cdn(browser_context):
    context, blocked, live_server = browser_context
    page = context.new_page()
    page.goto(live_server + "/docs")
    title = page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "lightfer" in title.inner_text()
    assert page.locator(".opblock-summary-path", has_text="/v1/analyze").count() >= 1
    assert not blocked, blocked
    page.close()
