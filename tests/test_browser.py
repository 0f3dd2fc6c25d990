"""One real browser: headless Debian Chromium driven by Playwright opens the assistant app, uploads an image,
sends a message, and sees the answer and a generated image in the page. Requests to anything but
127.0.0.1 are blocked. The screenshot is kept as a test artifact (its path is printed)."""

import os
import shutil
from urllib.parse import urlparse

import pytest
import torch
from PIL import Image as PILImage

sync_api = pytest.importorskip("playwright.sync_api")

from anymodal.commands.app import build_app  # noqa: E402
from anymodal.server.background import free_port  # noqa: E402

CHROMIUM = os.environ.get("ANYMODAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def fill_and_keep(textarea, text: str):
    """Gradio gives a textbox its initial value just after the box mounts (the options accordion mounts its
    children when opened), and a fill made in that moment is wiped: fill until the text stays."""
    for _ in range(10):
        textarea.fill(text)
        textarea.page.wait_for_timeout(300)
        if textarea.input_value() == text:
            return
    raise AssertionError(f"the page kept clearing {text!r}")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium; .ci/run does it)")
def test_assistant_in_a_real_browser(tiny_model, tmp_path):
    from apps.common import launch

    picture = tmp_path / "shapes.png"
    PILImage.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(picture)
    demo = build_app("assistant", tiny_model, "tiny random parts (browser test)")
    port = free_port()
    launch(demo, "127.0.0.1", port, 16, prevent_thread_lock=True, quiet=True)
    outside = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def local_only(route):
                if urlparse(route.request.url).hostname in ("127.0.0.1", None) or route.request.url.startswith("data:"):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()

            page.route("**/*", local_only)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.get_by_text("options").click()
            fill_and_keep(page.locator("#prefill textarea"), "here it is [IMG0]")
            page.locator("#box input[type=file]").set_input_files(str(picture))
            # the upload is asynchronous: send once its thumbnail is shown and the spinner is gone
            page.locator("#box img.thumbnail-image").wait_for(timeout=60_000)
            page.locator('#box [aria-label="Uploading"]').wait_for(state="detached", timeout=60_000)
            fill_and_keep(page.locator("#box textarea"), "what is in this picture? draw one like it")
            page.locator("#box textarea").press("Enter")
            # the user's image, then the generated one, both rendered as <img> in the chat (the wait is a ceiling
            # for two busy cores)
            try:
                page.wait_for_function("document.querySelectorAll('#chat img').length >= 2", timeout=180_000)
            except sync_api.TimeoutError:
                page.screenshot(path=str(tmp_path / "timed-out.png"), full_page=True)
                raise AssertionError(f"no generated image in the chat; the page is in {tmp_path / 'timed-out.png'}")
            page.get_by_text("here it is").first.wait_for(timeout=30_000)
            sources = [img.get_attribute("src") for img in page.locator("#chat img").all()]
            shot = tmp_path / "assistant.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"browser screenshot: {shot}")
            browser.close()
    finally:
        demo.close()
    assert any("shapes" in (s or "") for s in sources)  # the upload
    assert any("/image-" in (s or "") for s in sources)  # the generated image, served from the session folder
    assert shot.stat().st_size > 10_000
    assert not [u for u in outside if not u.startswith("data:")], outside
