"""The one Jinja2 environment for ``templates/``, autoescaping every page."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from api.security import csrf_token

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    environment = Jinja2Templates(directory=str(TEMPLATES_DIR))
    # Names come from Spotify and are untrusted: every template escapes, whatever its suffix.
    environment.env.autoescape = True
    return environment


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    page = {"csrf_token": csrf_token(request), "user_id": request.session.get("user_id")}
    return templates().TemplateResponse(
        request, name, {**page, **(context or {})}, status_code=status_code
    )
