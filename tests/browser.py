"""A page opened as a reader opens it: Debian's Chromium, headless, driven by playwright through
its DevTools protocol (playwright's own browser download is not used), with everything the page
logs or fails to load recorded, and a full-page screenshot kept as a test artifact."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where screenshots stay after the run: CI leaves them in `test-artifacts/` of its clone.
ARTIFACTS = Path(
    os.environ.get("SORTFORMER_BUILD_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")
)


def unavailable() -> str | None:
    """Why no page can be opened here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    return None


@dataclass
class RenderedImage:
    alt: str | None
    width: float
    height: float
    decoded: bool  # loaded, and its pixels decoded


@dataclass
class OpenedPage:
    console_errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[RenderedImage] = field(default_factory=list)
    title: str = ""
    screenshot: Path | None = None


def open_page(page_file: Path, screenshot_name: str) -> OpenedPage:
    """Load `page_file` from disk, wait for it to finish loading, read what a reader would see."""
    from playwright.sync_api import sync_playwright

    opened = OpenedPage()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda message: (
                    opened.console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: opened.console_errors.append(str(error)))
            page.on("requestfailed", lambda request: opened.failed_loads.append(request.url))
            page.on("request", lambda request: opened.requests.append(request.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            opened.title = page.title()
            rendered = page.evaluate(
                """() => [...document.images].map(image => {
                    const box = image.getBoundingClientRect();
                    return {alt: image.getAttribute("alt"), width: box.width, height: box.height,
                            decoded: image.complete && image.naturalWidth > 0};
                })"""
            )
            opened.images = [RenderedImage(**image) for image in rendered]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            opened.screenshot = ARTIFACTS / screenshot_name
            page.screenshot(path=str(opened.screenshot), full_page=True)
        finally:
            browser.close()
    return opened


def keep(page_file: Path, name: str) -> Path:
    """A copy of the page beside its screenshot."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(page_file, ARTIFACTS / name))
