"""Headless Chromium for the browser tests, through Playwright and the system's own browser
(Debian's ``chromium``): Playwright's browser builds are never downloaded. Tests skip where
Playwright or a Chromium is not installed."""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
from typing import Iterator

import pytest

#: Executable names of a system Chromium, tried in this order.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The path of an installed Chromium, else None."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None


def browser_missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if chromium_path() is None:
        return "no Chromium installed (apt-get install chromium)"
    return None


#: Skips a test before any of its fixtures start (MLflow server, model) where no browser can run.
needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")


@contextlib.contextmanager
def headless_chromium() -> Iterator:
    """A headless Playwright ``Browser`` on the system Chromium, closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            browser.close()
