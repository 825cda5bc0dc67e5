"""Operations: liveness, Prometheus metrics, and the self-hoster's health page."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import admin_reads, airflow
from api.deps import AdminUser, DatabaseDep, SettingsDep
from api.templating import render

router = APIRouter(tags=["operations"])


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, authorization: Annotated[str, Header()] = "") -> Response:
    """Prometheus' scrape. With ``AUXCORD_METRICS_TOKEN`` set, only for ``Bearer <token>``."""
    token = request.app.state.settings.metrics_token
    if token is not None and not secrets.compare_digest(
        authorization.encode(), f"Bearer {token.get_secret_value()}".encode()
    ):
        return Response(
            "Metrics need Authorization: Bearer <AUXCORD_METRICS_TOKEN>.\n",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
            media_type="text/plain",
        )
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """Browsers ask for ``/favicon.ico`` whatever the page links; the icon is an SVG."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


@router.get("/admin")
def admin(
    request: Request, user: AdminUser, database: DatabaseDep, settings: SettingsDep
) -> Response:
    """The self-hoster's health page: one table per component, in human units, times in the
    admin's own time zone."""
    return render(
        request,
        "admin.html",
        {
            **admin_reads.admin_overview(database),
            "zone": user.timezone,
            "live_mode": request.app.state.now_playing_signal.mode,
            "airflow": airflow.last_runs(settings),
        },
    )
