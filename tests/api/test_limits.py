"""Request bodies are bounded before anything parses them (api/limits.py).

Bodies stream in chunks with no Content-Length, as an attacker's would; a test counts the bytes
the server pulled, so "refused" means "refused before the rest was read", not "refused after
spooling it all to disk".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import create_app
from api.deps import signed_in_session
from api.limits import FORM_LIMIT_BYTES, BodyLimits, UploadRoute
from api.security import session_cookie as signed_session
from auxcord.accounts import AccountStore
from auxcord.clients import mongo_database
from auxcord.settings import Settings, load_settings
from auxcord.tokens import TokenCipher
from cli.webserver import serve_in_thread
from devtools.stack import free_port
from tests.api.world import session_cookie

CHUNK = 16 * 1024
HUGE = 1 << 30
"""What the client offers to send: far more than anything may read."""
FORM = "application/x-www-form-urlencoded"


class Offered:
    """A body of ``total`` bytes streamed in chunks (no Content-Length), counting what the
    server actually pulled."""

    def __init__(self, total: int, prefix: bytes, suffix: bytes = b"") -> None:
        self.total = total
        self.prefix = prefix
        self.suffix = suffix
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = self.prefix + b"a" * (CHUNK - len(self.prefix))
        while self.sent < self.total:
            self.sent += len(chunk)
            yield chunk
            chunk = b"a" * CHUNK
        yield self.suffix


def _post(
    app: ASGIApp, path: str, body: Offered | bytes, content_type: str, cookie: str | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        cookies = {"auxcord_session": cookie} if cookie else {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", cookies=cookies
        ) as client:
            return await client.post(path, content=body, headers={"content-type": content_type})

    return asyncio.run(go())


@pytest.fixture
def offline_app(tmp_path: Path) -> FastAPI:
    """The real app; anonymous refusals never reach MongoDB, so no server is needed."""
    return create_app(load_settings(data_dir=tmp_path))


FILE_PART = (
    b'--b\r\nContent-Disposition: form-data; name="export"; filename="my_spotify_data.zip"\r\n'
    b"Content-Type: application/zip\r\n\r\n"
)
MULTIPART = "multipart/form-data; boundary=b"


@pytest.mark.parametrize(
    ("path", "content_type", "prefix"),
    [
        ("/groups", FORM, b"csrf_token=x&name="),
        ("/join/x", FORM, b"csrf_token=x&pad="),
        ("/auth/logout", FORM, b"csrf_token="),
        ("/imports", FORM, b"csrf_token="),
        ("/imports", MULTIPART, FILE_PART),
    ],
)
def test_an_anonymous_streamed_body_is_refused_once_past_the_form_limit(
    offline_app: FastAPI, path: str, content_type: str, prefix: bytes
) -> None:
    body = Offered(HUGE, prefix)
    response = _post(offline_app, path, body, content_type)
    assert response.status_code == 413, response.text
    assert response.text == "The request body is too large: at most 64 KiB here."
    assert response.headers["connection"] == "close"
    assert body.sent <= FORM_LIMIT_BYTES + CHUNK, "nothing past the limit was read"


@pytest.mark.parametrize("path", ["/groups", "/join/x", "/auth/logout", "/groups/g1/leave"])
def test_multipart_is_refused_where_no_upload_is_expected(offline_app: FastAPI, path: str) -> None:
    body = Offered(4 * CHUNK, FILE_PART)
    response = _post(offline_app, path, body, MULTIPART)
    assert response.status_code == 415
    assert response.text == "This address takes no file uploads."
    assert body.sent <= CHUNK, "refused before reading the body"


def test_a_declared_length_past_the_limit_is_refused_unread(offline_app: FastAPI) -> None:
    response = _post(offline_app, "/groups", b"n" * (FORM_LIMIT_BYTES + 1), FORM)
    assert response.status_code == 413


def test_small_forms_still_reach_their_handler(offline_app: FastAPI) -> None:
    # Anonymous, so the handler answers "sign in" (a redirect), not the middleware.
    response = _post(offline_app, "/auth/logout", Offered(CHUNK, b"csrf_token="), FORM)
    assert response.status_code in (303, 400), response.text


@pytest.fixture
def uploader_app(test_settings: Settings) -> FastAPI:
    accounts = AccountStore(
        mongo_database(test_settings), TokenCipher(test_settings.secret_key_value())
    )
    accounts.link(
        user_id="uploader",
        display_name="Uploader",
        country="SE",
        timezone="UTC",
        client_id="auxcord-local",
        token_info={"access_token": "a", "refresh_token": "r", "expires_in": 3600, "scope": ""},
    )
    return create_app(test_settings)


def test_a_signed_in_upload_may_pass_the_form_limit(
    uploader_app: FastAPI, test_settings: Settings
) -> None:
    boundary = b"b0undary"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nt\r\n'
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="export"; '
        b'filename="notes.txt"\r\nContent-Type: text/plain\r\n\r\n'
    )
    tail = b"\r\n--" + boundary + b"--\r\n"
    body = Offered(4 * FORM_LIMIT_BYTES, head, tail)
    cookie = session_cookie(test_settings, {"user_id": "uploader", "csrf": "t"})
    response = _post(uploader_app, "/imports", body, f"{MULTIPART}0undary", cookie)
    # The handler read it all and refused the file by its name, as it should.
    assert response.status_code == 303, response.text


async def _count_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that reads the whole body and answers its size."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def _session_user(scope: Scope) -> str | None:
    """Who uploads, for a bare app with no accounts: whoever the session names."""
    user_id = scope.get("session", {}).get("user_id")
    return user_id if isinstance(user_id, str) else None


@pytest.mark.parametrize(("signed_in", "expected"), [(True, 200), (False, 413)])
def test_the_upload_limit_holds_for_streamed_uploads(signed_in: bool, expected: int) -> None:
    upload_limit = 8 * CHUNK
    limited = BodyLimits(
        _count_body,
        form_limit=2 * CHUNK,
        uploads=(UploadRoute("POST", "/imports", upload_limit),),
        uploader=_session_user,
    )

    async def signed(scope: Scope, receive: Receive, send: Send) -> None:
        # What SessionMiddleware, outside the limits in the app, puts in the scope.
        scope["session"] = {"user_id": "uploader"} if signed_in else {}
        await limited(scope, receive, send)

    within = _post(signed, "/imports", Offered(upload_limit, FILE_PART), MULTIPART)
    assert within.status_code == expected
    body = Offered(HUGE, FILE_PART)
    assert _post(signed, "/imports", body, MULTIPART).status_code == 413
    assert body.sent <= upload_limit + CHUNK


@pytest.mark.parametrize("ended", ["signed out", "signed out everywhere"])
def test_an_ended_session_gets_only_the_form_limit_on_uploads(
    uploader_app: FastAPI, test_settings: Settings, ended: str
) -> None:
    accounts = AccountStore(
        mongo_database(test_settings), TokenCipher(test_settings.secret_key_value())
    )
    account = accounts.get("uploader")
    assert account is not None
    session = {"csrf": "t", **signed_in_session("uploader", account.session_version)}
    if ended == "signed out":
        accounts.end_session("uploader", session["session_id"])
    else:
        accounts.end_sessions("uploader")
    cookie = signed_session(test_settings.secret_key_value(), session)
    body = Offered(HUGE, FILE_PART)
    response = _post(uploader_app, "/imports", body, MULTIPART, cookie)
    assert response.status_code == 413
    assert body.sent <= FORM_LIMIT_BYTES + CHUNK, "a dead cookie does not unlock the upload limit"


def test_one_upload_body_at_a_time_per_user() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
        # The first upload stalls half-read until released; any other is read at once.
        if not arrived.is_set():
            await receive()
            arrived.set()
            await release.wait()
        await _count_body(scope, receive, send)

    limited = BodyLimits(
        slow_reader,
        form_limit=CHUNK,
        uploads=(UploadRoute("POST", "/imports", 8 * CHUNK),),
        uploader=_session_user,
    )

    async def signed(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"] = {"user_id": "uploader"}
        await limited(scope, receive, send)

    async def go() -> tuple[int, int, int]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=signed), base_url="http://test"
        ) as client:
            headers = {"content-type": MULTIPART}
            first = asyncio.create_task(
                client.post("/imports", content=Offered(4 * CHUNK, FILE_PART), headers=headers)
            )
            await arrived.wait()
            second = await client.post("/imports", content=b"x", headers=headers)
            release.set()
            third_after = (await first).status_code
            again = await client.post("/imports", content=b"x", headers=headers)
            return second.status_code, third_after, again.status_code

    second, first, again = asyncio.run(go())
    assert (second, first, again) == (429, 200, 200)


@pytest.fixture
def served(test_settings: Settings) -> Iterator[str]:
    with serve_in_thread(test_settings, "127.0.0.1", free_port()) as base:
        yield base


def test_a_real_server_answers_413_and_stops_reading(served: str) -> None:
    offered = 0

    def body() -> Iterator[bytes]:
        nonlocal offered
        while offered < HUGE:
            offered += CHUNK
            yield b"a" * CHUNK

    with httpx.Client(base_url=served, timeout=30) as client:
        response = client.post("/groups", content=body(), headers={"content-type": FORM})
    assert response.status_code == 413
    assert "too large" in response.text
    # Kernel buffers on both sides hold a few MB at most; the client stopped long before 1 GB.
    assert offered < 64 << 20
