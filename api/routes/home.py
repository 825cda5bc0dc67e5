"""The front page: sign-in for visitors, the signed-in user's status otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import OptionalUser
from api.templating import render

router = APIRouter(tags=["pages"])


@router.get("/")
def home(request: Request, user: OptionalUser) -> Response:
    return render(request, "home.html", {"user": user})


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}
