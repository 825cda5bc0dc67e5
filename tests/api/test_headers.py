"""Response headers (no caching of pages, HSTS behind https) and album-art URLs (https only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.templating import album_art, templates
from auxcord.settings import load_settings


def _get(tmp_path: Path, path: str, redirect_uri: str) -> httpx.Response:
    """``path`` from the real app; these routes never reach MongoDB, so no server is needed."""
    app = create_app(load_settings(data_dir=tmp_path, spotify_redirect_uri=redirect_uri))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(go())


LOOPBACK = "http://127.0.0.1:8000/auth/callback"
HTTPS = "https://aux.example.org/auth/callback"


@pytest.mark.parametrize("path", ["/", "/healthz", "/groups/nope"])
def test_pages_are_never_cached(tmp_path: Path, path: str) -> None:
    response = _get(tmp_path, path, LOOPBACK)
    assert response.headers["cache-control"] == "private, no-store"


def test_static_files_may_be_cached(tmp_path: Path) -> None:
    response = _get(tmp_path, "/static/app.css", LOOPBACK)
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("cache-control", "")


def test_hsts_only_behind_https(tmp_path: Path) -> None:
    assert "strict-transport-security" not in _get(tmp_path, "/healthz", LOOPBACK).headers
    hsts = _get(tmp_path, "/healthz", HTTPS).headers["strict-transport-security"]
    assert hsts == "max-age=31536000"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://i.scdn.co/image/ab67616d0000b273", True),
        ("http://127.0.0.1:18800/_sim/art/a1.svg", True),
        ("http://i.scdn.co/image/ab67616d0000b273", False),
        ("javascript:alert(1)", False),
        (" JavaScript:alert(1)", False),
        ("data:image/svg+xml,<svg onload=alert(1)>", False),
        ("//evil.example/x.png", False),
        ("http://[nonsense", False),
        ("", False),
        (None, False),
    ],
)
def test_only_https_album_art_is_shown(url: str | None, shown: bool) -> None:
    assert (album_art(url) is not None) is shown
    page = (
        templates()
        .env.from_string('{% from "_macros.html" import art %}{{ art(url, "Album") }}')
        .render(url=url)
    )
    assert ("<img" in page) is shown, page
