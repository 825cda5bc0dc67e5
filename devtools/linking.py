"""``auxcord link --simulated``: link every simulated user through the real sign-in flow.

Each user gets a browser of their own (a cookie jar), visits ``/auth/login``, consents on the
simulator's ``/authorize`` and lands on ``/auth/callback``, exactly as a person would. The web
app must be reachable at the redirect URI; if nothing answers there, one is started for the
duration of the linking.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from auxcord.errors import AuxcordError
from auxcord.settings import Settings


@dataclass(frozen=True)
class LinkResult:
    user_id: str
    display_name: str
    timezone: str
    group: int


def simulated_users(settings: Settings) -> list[dict[str, Any]]:
    url = f"{settings.spotify_accounts_base}/_sim/users"
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AuxcordError(
            f"the Spotify simulator is not reachable at {url} ({type(exc).__name__}); start it "
            "with `auxcord simulate` or point AUXCORD_SPOTIFY_ACCOUNTS_BASE at it"
        ) from exc
    users: list[dict[str, Any]] = response.json()
    return users


@contextmanager
def _web_app(settings: Settings) -> Iterator[str]:
    parts = urlsplit(settings.spotify_redirect_uri)
    base = f"{parts.scheme}://{parts.netloc}"
    try:
        httpx.get(f"{base}/healthz", timeout=2).raise_for_status()
        yield base
        return
    except httpx.HTTPError:
        pass
    from cli.webserver import serve_in_thread

    with serve_in_thread(settings, parts.hostname or "127.0.0.1", parts.port or 80) as started:
        yield started


def _reason(page: httpx.Response) -> str:
    """The message of auxcord's sign-in error page, or the status code."""
    found = re.search(r'<p class="error">(.*?)</p>', page.text, re.S)
    return html.unescape(found.group(1)).strip() if found else f"HTTP {page.status_code}"


def link_one(base: str, user: dict[str, Any]) -> None:
    """Drive one sign-in, as a browser would, for simulated ``user``."""
    with httpx.Client(follow_redirects=False, timeout=15) as browser:
        login = browser.get(f"{base}/auth/login", params={"tz": user["timezone"]})
        if login.status_code != 302:
            raise AuxcordError(f"{user['user_id']} could not sign in: {_reason(login)}")
        consent = browser.get(f"{login.headers['location']}&sim_user={user['user_id']}")
        if consent.status_code != 302:
            raise AuxcordError(f"{user['user_id']}: the simulator refused ({consent.status_code})")
        done = browser.get(consent.headers["location"])
        if done.status_code != 303:
            raise AuxcordError(f"{user['user_id']} could not sign in: {_reason(done)}")


def link_simulated_users(settings: Settings) -> list[LinkResult]:
    users = simulated_users(settings)
    with _web_app(settings) as base:
        for user in users:
            link_one(base, user)
    return [
        LinkResult(u["user_id"], u["display_name"], u["timezone"], int(u.get("group", 0)))
        for u in users
    ]
