"""Web security in one place: CSRF tokens, a Content-Security-Policy, and sign-in rate limits."""

from __future__ import annotations

import json
import secrets
from base64 import b64encode
from typing import Any

from fastapi import HTTPException, Request
from itsdangerous import TimestampSigner
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auxcord.ratelimit import RollingWindowLimiter


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


HSTS_MAX_AGE_S = 365 * 24 * 3600
NO_STORE = b"private, no-store"


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and friends to every response.

    Every response but the static files also gets ``Cache-Control: private, no-store``
    (unless it sets its own): pages differ by who asks, and a shared or back-button cache must
    never hand one person's page to the next. Behind https, Strict-Transport-Security keeps
    browsers from ever trying plain http (and sending the session cookie there).

    Plain ASGI rather than ``BaseHTTPMiddleware``, which costs a task and a stream per request
    and does not pass Server-Sent Events through promptly.
    """

    def __init__(
        self, app: ASGIApp, *, image_sources: str, https: bool, static_prefix: str
    ) -> None:
        self.app = app
        self.static_prefix = static_prefix
        policy = (
            "default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: {image_sources}; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )
        self.headers = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]
        if https:
            hsts = f"max-age={HSTS_MAX_AGE_S}".encode()
            self.headers.append((b"strict-transport-security", hsts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = self.headers
        if not scope["path"].startswith(self.static_prefix):
            headers = [*headers, (b"cache-control", NO_STORE)]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in headers if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


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


def session_cookie(secret_key: str, session: dict[str, Any]) -> str:
    """The ``auxcord_session`` cookie value Starlette's SessionMiddleware sets for ``session``:
    how benchmarks and tests act as a signed-in user without a browser sign-in."""
    data = b64encode(json.dumps(session).encode())
    return TimestampSigner(secret_key).sign(data).decode()
