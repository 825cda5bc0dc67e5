"""Linking a simulated user over plain HTTP (PKCE), for tests that need an API token."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Protocol
from urllib.parse import parse_qs, urlparse

import requests

REDIRECT_URI = "http://127.0.0.1:9/callback"


class AccountsService(Protocol):
    """Anything with the accounts service's base URL: a running simulator, or just its URL."""

    url: str


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_code(
    sim: AccountsService, user_id: str, challenge: str, client_id: str = "test-client"
) -> str:
    response = requests.get(
        f"{sim.url}/authorize",
        allow_redirects=False,
        timeout=10,
        params={
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "sim_user": user_id,
            "scope": "user-read-recently-played",
        },
    )
    assert response.status_code == 302, response.text
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


def tokens_for(
    sim: AccountsService, user_id: str, client_id: str = "test-client"
) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    code = authorization_code(sim, user_id, challenge, client_id)
    response = requests.post(
        f"{sim.url}/api/token",
        timeout=10,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def authorized_session(
    sim: AccountsService, user_id: str, client_id: str = "test-client"
) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = (
        f"Bearer {tokens_for(sim, user_id, client_id)['access_token']}"
    )
    return session
