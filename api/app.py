"""The web app factory: ``create_app(settings)`` builds everything, nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from api.deps import SignInRequired
from api.imports import ImportJobs
from api.limits import BodyLimits
from api.live import ChangeSignal
from api.metrics import MetricsMiddleware, WebMetrics
from api.oauth_states import OAuthStates
from api.routes import api_v1, auth, group_pages, groups, home, imports, ops
from api.security import SecurityHeaders, auth_limiter
from auxcord.clients import mongo_client
from auxcord.errors import ConfigError
from auxcord.groups import GroupStore
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher

SESSION_MAX_AGE_S = 14 * 24 * 3600
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str) -> bool:
    """The redirect URI must be https, except on loopback. Returns whether it is https."""
    parts = urlsplit(uri)
    if parts.scheme == "https":
        return True
    if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
        return False
    raise ConfigError(
        f"AUXCORD_SPOTIFY_REDIRECT_URI: {uri!r} must be https (plain http only on loopback)"
    )


def create_app(settings: Settings) -> FastAPI:
    """The dashboard and API, configured by ``settings``."""
    https = check_redirect_uri(settings.spotify_redirect_uri)
    client = mongo_client(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        OAuthStates(app.state.database).ensure_indexes()
        GroupStore(app.state.database).ensure_indexes()
        app.state.now_playing_signal.start()
        yield
        app.state.now_playing_signal.stop()
        client.close()

    # No /docs or /redoc: they load scripts from a CDN, which the CSP (rightly) refuses. The
    # schema itself is at /openapi.json.
    app = FastAPI(
        title="auxcord", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.database = client[settings.mongodb_database]
    app.state.cipher = TokenCipher(settings.secret_key_value())
    app.state.auth_limiter = auth_limiter()
    app.state.now_playing_signal = ChangeSignal(app.state.database[Collection.NOW_PLAYING])
    app.state.metrics = WebMetrics(app.state.database)
    app.state.import_jobs = ImportJobs(settings)
    accounts_origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.spotify_api_base))
    # Middleware added first runs innermost: body limits inside the session (they tell a
    # signed-in uploader from an anonymous client), and their 413 still gets headers and metrics.
    app.add_middleware(BodyLimits)
    app.add_middleware(
        SecurityHeaders,
        image_sources=f"{accounts_origin} https://i.scdn.co",
        https=https,
        static_prefix="/static/",
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key_value(),
        session_cookie="auxcord_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=https,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (home, auth, groups, group_pages, imports, ops):
        app.include_router(module.router, include_in_schema=False)
    # The OpenAPI schema describes the JSON API only; pages are for browsers.
    app.include_router(api_v1.router)
    return app


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    """Pages need a signed-in user: remember where they were going, then offer sign-in."""
    assert isinstance(exc, SignInRequired)
    request.session["next"] = exc.next_path
    return RedirectResponse("/", 303)
