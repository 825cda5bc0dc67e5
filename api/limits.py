"""Request bodies are bounded before anything parses them.

FastAPI parses a form (and spools its file parts to disk) before the handler's session and
CSRF checks run, and Starlette puts no limit on file parts. So the limit lives in middleware,
outside the app, and counts the bytes as they stream in rather than trusting Content-Length:

- every request may carry at most :data:`FORM_LIMIT_BYTES`, enough for any form here;
- a signed-in user's upload (``POST /imports``) may carry the documented upload limit;
- multipart bodies are refused (415) wherever no upload is expected.

Past the limit the client gets a 413 at once and the connection is closed, so nothing more is
read; the app behind sees the client as gone. Plain ASGI, like the other middlewares.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import read_account, session_is_current
from api.imports import MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

FORM_LIMIT_BYTES = 64 * 1024
"""The largest body of any form but the upload: a group name and a CSRF token need far less."""
UPLOAD_OVERHEAD_BYTES = 64 * 1024
"""Multipart boundaries, part headers and the CSRF field around the uploaded file."""


@dataclass(frozen=True)
class UploadRoute:
    """A route that takes a file: multipart allowed, and a larger limit for signed-in users."""

    method: str
    path: str
    limit_bytes: int


UPLOAD_ROUTES = (UploadRoute("POST", "/imports", MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD_BYTES),)

Uploader = Callable[[Scope], Awaitable[str | None]]
"""Who may upload on this request: the signed-in user's id, or None."""


async def current_uploader(scope: Scope) -> str | None:
    """The user whose session is current (not signed out, not expired, not from before "sign
    out everywhere"): a cookie that merely names a user must not unlock the upload limit."""
    session = scope.get("session") or {}
    user_id = session.get("user_id")
    if not isinstance(user_id, str):
        return None
    # A MongoDB read, at most every few seconds per user (read_account caches), and only for
    # requests to an upload route that carry a user id.
    account = await run_in_threadpool(read_account, Request(scope), user_id)
    return user_id if session_is_current(session, account) else None


def _size(limit: int) -> str:
    """``65536`` → ``64 KiB``, ``1073807360`` → ``1.0 GiB``: the limit as people read it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale:
            return f"{limit / scale:.1f} {unit}" if limit % scale else f"{limit // scale} {unit}"
    return f"{limit} bytes"


class BodyLimits:
    """Bounds every HTTP request body; see the module's docstring.

    Sits inside Starlette's SessionMiddleware, so ``scope["session"]`` tells a signed-in user
    (who may upload) from an anonymous client (who gets the small limit everywhere, and so
    cannot make the server spool a large upload before the handler refuses it).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        form_limit: int = FORM_LIMIT_BYTES,
        uploads: tuple[UploadRoute, ...] = UPLOAD_ROUTES,
        uploader: Uploader = current_uploader,
    ) -> None:
        self.app = app
        self.form_limit = form_limit
        self.uploads = {(route.method, route.path): route for route in uploads}
        self.uploader = uploader
        self._uploading: set[str] = set()
        """Users with an upload body in flight: one each, so nobody spools several at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self.uploads.get((scope["method"], scope["path"]))
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/") and not upload:
            await _refuse(scope, receive, send, 415, "This address takes no file uploads.")
            return
        if upload is None or (uploader := await self.uploader(scope)) is None:
            await self._limited(scope, receive, send, self.form_limit)
            return
        if uploader in self._uploading:
            await _refuse(
                scope, receive, send, 429, "An upload of yours is still arriving: wait for it."
            )
            return
        self._uploading.add(uploader)
        try:
            await self._limited(scope, receive, send, upload.limit_bytes)
        finally:
            self._uploading.discard(uploader)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with at most ``limit`` bytes of body."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, 413, _too_large(limit))
            return

        received = 0
        refused = False
        response_started = False

        async def counted() -> Message:
            # Content-Length may be absent (chunked) or lie: count what actually arrives.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    # Answer now: FastAPI turns any error while parsing a body into its own
                    # 400, so the 413 cannot wait for the app. The app then sees the client
                    # gone and whatever it answers is dropped.
                    if not response_started:
                        await _refuse(scope, receive, send, 413, _too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except ClientDisconnect:
            # A handler that reads the body itself learns of the refusal this way.
            if not refused:
                raise


def _too_large(limit: int) -> str:
    return f"The request body is too large: at most {_size(limit)} here."


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    """Answer ``status`` and close the connection, so the rest of the body is never read."""
    log.warning(
        "request body refused",
        extra={
            "status": status,
            "path": scope["path"],
            "method": scope["method"],
            "user_id": scope.get("session", {}).get("user_id"),
        },
    )
    response = PlainTextResponse(message, status_code=status, headers={"connection": "close"})
    await response(scope, receive, send)
