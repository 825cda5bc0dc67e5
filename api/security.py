"""Web security in one place: CSRF tokens, a Content-Security-Policy, and sign-in rate limits."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response

from auxcord.ratelimit import RollingWindowLimiter

CSRF_FIELD = "csrf_token"


def session_secret(request: Request, key: str) -> str:
    """A random value kept in this browser's signed session under ``key``, made on first use."""
    value = request.session.get(key)
    if not value:
        value = secrets.token_urlsafe(32)
        request.session[key] = value
    return str(value)


def csrf_token(request: Request) -> str:
    """This session's CSRF token; every form carries it."""
    return session_secret(request, "csrf")


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(expected, submitted):
        raise HTTPException(
            status_code=400, detail="The form expired. Reload the page and try again."
        )


class SecurityHeaders(BaseHTTPMiddleware):
    """Adds a strict Content-Security-Policy and friends to every response."""

    def __init__(self, app: object, image_sources: str) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.policy = (
            "default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: {image_sources}; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


AUTH_REQUESTS_PER_MINUTE = 60


def auth_limiter() -> RollingWindowLimiter:
    """Each app's own budget of sign-in requests per client address."""
    return RollingWindowLimiter(AUTH_REQUESTS_PER_MINUTE, window_s=60.0)


def limit_auth(request: Request) -> None:
    """Slow down sign-in floods from one address (429 with Retry-After)."""
    address = request.client.host if request.client else "unknown"
    wait = request.app.state.auth_limiter.admit(address)
    if wait > 0:
        raise HTTPException(
            status_code=429,
            detail="Too many sign-in attempts. Wait a minute and try again.",
            headers={"Retry-After": str(int(wait) + 1)},
        )
