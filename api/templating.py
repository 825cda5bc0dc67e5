"""The one Jinja2 environment for ``templates/``, autoescaping every page.

Names come from Spotify and are untrusted: every template escapes, whatever its suffix, and
no template marks anything ``safe``. The live feed's script writes names with ``textContent``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from api import humanize
from api.security import csrf_token

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def minutes_text(minutes: float | int | None) -> str:
    """``95.5`` → ``1 h 35 min``: how people say listening time."""
    total = round(float(minutes or 0))
    hours, rest = divmod(total, 60)
    return f"{hours} h {rest} min" if hours else f"{rest} min"


def clock(milliseconds: int | None) -> str:
    seconds = (milliseconds or 0) // 1000
    return f"{seconds // 60}:{seconds % 60:02d}"


def local_time(moment: datetime | None, zone: str = "UTC", fmt: str = "%H:%M") -> str:
    if moment is None:
        return ""
    try:
        return moment.astimezone(ZoneInfo(zone)).strftime(fmt)
    except (KeyError, ValueError):
        return moment.astimezone(UTC).strftime(fmt)


def album_art(url: str | None) -> str | None:
    """``url`` if a page may show it as album art, else None.

    Spotify serves its images over https, so only https is taken; ``javascript:``, ``data:``
    and plain http URLs (which a network attacker could swap) are dropped. The one exception
    is http on loopback, where the local Spotify simulator serves its art to a browser on the
    same machine.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # "http://[nonsense": not a URL at all
        return None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return url
    return None


def long_day(day: date | str) -> str:
    value = date.fromisoformat(day) if isinstance(day, str) else day
    return f"{value:%A} {value.day} {value:%B %Y}"


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    environment = Jinja2Templates(directory=str(TEMPLATES_DIR))
    environment.env.autoescape = True
    environment.env.filters.update(
        minutes_text=minutes_text,
        clock=clock,
        local_time=local_time,
        long_day=long_day,
        album_art=album_art,
    )
    # Durations, relative times, counts and possessives (``ago``, ``duration``, ``count``…).
    environment.env.filters.update(humanize.FILTERS)
    return environment


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    page = {
        "csrf_token": csrf_token(request),
        "user_id": request.session.get("user_id"),
        # A one-time message from the action that redirected here.
        "flash": request.session.pop("flash", None),
    }
    return templates().TemplateResponse(
        request, name, {**page, **(context or {})}, status_code=status_code
    )
