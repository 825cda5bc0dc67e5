"""Real headless Chromium (Debian's package) driven by Playwright.

Playwright's own browser download does not work everywhere (it does not here), so the tests use
the system Chromium. Without it they are skipped, and ``make test`` says so loudly; CI installs
it first (``.ci/run``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.chromium import CHROMIUM_ARGS, INSTALL_HINT, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        message = f"no Chromium for the browser tests. Install it: {INSTALL_HINT}"
        if os.environ.get("AUXCORD_REQUIRE_BROWSER"):
            pytest.fail(message)  # CI installs it; skipping there would hide the tests
        pytest.skip(f"BROWSER TESTS SKIPPED: {message}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """Where this test saves its screenshots (kept as CI artifacts)."""
    folder = ARTIFACTS / str(request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
