"""Where the system Chromium is, and how to start it headless here: for the browser tests and
the live-feed benchmark. Playwright's own browser download does not work on every machine (it
does not on ours), so both drive Debian's ``chromium`` package."""

from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INSTALL_HINT = "apt-get install -y chromium"


def chromium_path() -> str | None:
    """``AUXCORD_CHROMIUM`` if set, else the first Chromium on PATH."""
    configured = os.environ.get("AUXCORD_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None
