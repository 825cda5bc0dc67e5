"""The simulator's HTTP layer: Spotify's accounts service, the Web API subset, and ``/_sim``.

Thin on purpose: each endpoint parses the request, asks the model or the state, and shapes the
answer as Spotify does (status codes, error bodies, Retry-After, cursors). Starlette rather
than FastAPI keeps the per-request overhead low enough for thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import math
import re
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from auxcord.ratelimit import RollingWindowLimiter
from devtools.simulator.model import KIND_EPISODE, User, World, iso_ms
from devtools.simulator.objects import SpotifyObjects
from devtools.simulator.state import AccessToken, Accounts, DailyQuota, Faults, OAuthError

RECENTLY_PLAYED_WINDOW = 50
_SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_MALFORMED_BODIES = (
    b'{"items": [{"track": null, "played_at": "yesterday"}], "next": 7',
    b'{"items": {"not": "a list"}, "cursors": "none", "limit": "fifty"}',
    b'{"is_playing": "maybe", "item": {"id": 42, "type": "track"}, "progress_ms": -1}',
)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(data), status, headers=headers, media_type="application/json")


def _api_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": {"status": status, "message": message}}, status, headers)


def _retry_after(real_seconds: float) -> dict[str, str]:
    """Retry-After in real seconds, like ``expires_in``: a client's own timer works at any speed."""
    return {"Retry-After": str(max(1, math.ceil(real_seconds)))}


class Simulator:
    """Everything one running simulator holds; the routes are its bound methods."""

    def __init__(
        self,
        world: World,
        accounts: Accounts,
        limiter: RollingWindowLimiter,
        faults: Faults,
        base_url: str,
        quota: DailyQuota,
        quota_counts_accounts: bool = True,
    ) -> None:
        self.world, self.accounts, self.limiter, self.faults = world, accounts, limiter, faults
        self.quota, self.quota_counts_accounts = quota, quota_counts_accounts
        self.clock = accounts.clock
        self.set_base_url(base_url)
        self.track_index = {track: i for i, track in enumerate(world.catalog.track_ids)}
        self.calls: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        """Calls answered with an error instead of data, by cause (``/_sim/stats``)."""
        # The world is shared with control calls from other threads (tests, the demo).
        self.lock = threading.Lock()

    def set_base_url(self, base_url: str) -> None:
        self.objects = SpotifyObjects(self.world, base_url)
        self._fragments: dict[tuple[int, int], bytes] = {}

    # Accounts service

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
        if not client_id or (self.accounts.apps and client_id not in self.accounts.apps):
            return HTMLResponse("<h1>INVALID_CLIENT: Invalid client</h1>", 400)
        if not redirect_uri.startswith(("http://", "https://")):
            return HTMLResponse("<h1>INVALID_CLIENT: Invalid redirect URI</h1>", 400)

        def back(**params: str) -> RedirectResponse:
            if "state" in q:
                params["state"] = q["state"]
            separator = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", 302)

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        challenge = q.get("code_challenge")
        if challenge and q.get("code_challenge_method") != "S256":
            return back(error="invalid_request")
        user_id = q.get("sim_user")
        if user_id is None:
            return HTMLResponse(self._consent_page(str(request.url)))
        if user_id not in self.world.by_id:
            return HTMLResponse(f"<h1>Unknown simulated user {html.escape(user_id)}</h1>", 400)
        code = self.accounts.issue_code(
            client_id, redirect_uri, user_id, q.get("scope", ""), challenge
        )
        return back(code=code)

    def _consent_page(self, url: str) -> str:
        links = "".join(
            f'<li><a href="{html.escape(url)}&amp;sim_user={html.escape(user.user_id)}">'
            f"{html.escape(user.display_name)} ({html.escape(user.user_id)})</a></li>"
            for user in self.world.users
        )
        return f"<!doctype html><title>Simulated Spotify</title><h1>Log in as</h1><ul>{links}</ul>"

    async def token(self, request: Request) -> Response:
        form = await request.form()
        client_id, secret = str(form.get("client_id", "")), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                client_id, _, basic_secret = base64.b64decode(header[6:]).decode().partition(":")
                secret = basic_secret
            except ValueError:
                return _json({"error": "invalid_client"}, 400)
        grant_type = form.get("grant_type")
        self.calls["token"] += 1
        if self.quota_counts_accounts:
            if grant_type == "refresh_token" and not client_id:
                refresh = self.accounts.refresh.get(str(form.get("refresh_token", "")))
                client_id = refresh.client_id if refresh else ""
            if client_id and (refusal := self._over_quota(client_id)):
                return refusal
        try:
            if grant_type == "authorization_code":
                verifier = form.get("code_verifier")
                answer = self.accounts.exchange_code(
                    str(form.get("code", "")),
                    str(form.get("redirect_uri", "")),
                    client_id,
                    str(secret) if secret is not None else None,
                    str(verifier) if verifier is not None else None,
                )
            elif grant_type == "refresh_token":
                answer = self.accounts.refresh_access(
                    str(form.get("refresh_token", "")),
                    client_id,
                    str(secret) if secret is not None else None,
                )
            else:
                return _json(
                    {
                        "error": "unsupported_grant_type",
                        "error_description": f"grant_type {grant_type!r} is not supported",
                    },
                    400,
                )
        except OAuthError as exc:
            return _json({"error": exc.code, "error_description": exc.description}, exc.status)
        return _json(answer)

    # Web API

    async def _admit(self, request: Request, endpoint: str) -> AccessToken | Response:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _api_error(401, "No token provided")
        try:
            grant = self.accounts.authenticate(header[7:])
        except OAuthError as exc:
            return _api_error(401, exc.description)
        self.calls[endpoint] += 1
        self.calls[f"client:{grant.client_id}"] += 1
        faults = self.faults
        if faults.applies_to(grant.user_id):
            if faults.slow_ms:
                await asyncio.sleep(faults.slow_ms / 1000)
            if time.monotonic() < faults.storm_until:
                self.refused["storm"] += 1
                return _api_error(
                    429, "API rate limit exceeded", {"Retry-After": str(faults.storm_retry_after)}
                )
            if faults.take("fail_next"):
                self.refused["injected_error"] += 1
                return _api_error(faults.fail_status, "Service unavailable")
        # The daily quota is checked first: while an account is locked out, every call gets
        # QUOTA_EXCEEDED. A call it admits counts even if the 30 s limit then refuses it.
        if refusal := self._over_quota(grant.client_id):
            return refusal
        wait = self.limiter.admit(grant.client_id)
        if wait > 0:
            # The 30 s limit's 429 carries no reason: that is how clients tell the two apart.
            self.refused["rate_limit"] += 1
            return _api_error(429, "API rate limit exceeded", _retry_after(wait))
        return grant

    def _over_quota(self, client_id: str) -> Response | None:
        """Count a call against the daily quota of ``client_id``'s developer account, or refuse it.

        Retry-After is real seconds, like the 30 s limit's (whose window is real time): the
        virtual hours until the oldest calls leave the window, divided by the clock's speed.
        """
        wait_ms = self.quota.admit(self.quota.account(client_id))
        if wait_ms == 0:
            return None
        self.refused["quota_exceeded"] += 1
        body = {
            "error": {
                "status": 429,
                "message": "Daily request quota exceeded for this developer account",
                "reason": "QUOTA_EXCEEDED",
            }
        }
        return _json(body, 429, _retry_after(self.clock.real_seconds(wait_ms / 1000)))

    def _malformed(self, grant: AccessToken) -> Response | None:
        if self.faults.applies_to(grant.user_id) and self.faults.take("malformed_next"):
            body = _MALFORMED_BODIES[self.calls["malformed"] % len(_MALFORMED_BODIES)]
            self.calls["malformed"] += 1
            return Response(body, 200, media_type="application/json")
        return None

    async def me(self, request: Request) -> Response:
        grant = await self._admit(request, "me")
        if isinstance(grant, Response):
            return grant
        return self._malformed(grant) or _json(self.objects.user(grant.user_id))

    async def recently_played(self, request: Request) -> Response:
        grant = await self._admit(request, "recently-played")
        if isinstance(grant, Response):
            return grant
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
            after = int(q["after"]) if "after" in q else None
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            return _api_error(400, "Invalid limit, after or before: expected integers")
        if not 1 <= limit <= 50:
            return _api_error(400, "Invalid limit: must be between 1 and 50")
        if after is not None and before is not None:
            return _api_error(400, "Only one of after and before may be given")
        if malformed := self._malformed(grant):
            return malformed
        user = self.world.by_id[grant.user_id]
        with self.lock:
            page = self._recently_played_page(user, limit, after, before, str(request.url))
        return Response(page, media_type="application/json")

    def _recently_played_page(
        self, user: User, limit: int, after: int | None, before: int | None, href: str
    ) -> bytes:
        now = self.clock.now_ms()
        timeline = self.world.timeline(user, now)
        indices, ends = timeline.listed_plays()
        hi = int(np.searchsorted(ends, now, side="right"))
        lo = max(0, hi - RECENTLY_PLAYED_WINDOW)
        window = indices[lo:hi]
        window_ends = ends[lo:hi]
        if after is not None:
            newer = window[window_ends > after]
            chosen, more = newer[:limit], len(newer) > limit
        else:
            older = window if before is None else window[window_ends < before]
            chosen, more = older[-limit:], len(older) > limit
        chosen = chosen[::-1]  # newest first
        # Items are spliced from cached JSON fragments: this page is the simulator's hot path.
        items = b",".join(
            b'{"track":'
            + self._item_json(int(timeline.kind[i]), int(timeline.item[i]))
            + b',"played_at":"'
            + iso_ms(int(timeline.end_ms[i])).encode()
            + b'","context":'
            + self._context_json(int(timeline.context[i]))
            + b"}"
            for i in chosen
        )
        base = f"{self.objects.base_url}/v1/me/player/recently-played"
        cursors: dict[str, str] = {}
        next_url = None
        if len(chosen):
            newest, oldest = int(timeline.end_ms[chosen[0]]), int(timeline.end_ms[chosen[-1]])
            cursors = {"after": str(newest), "before": str(oldest)}
            if more:
                direction = f"after={newest}" if after is not None else f"before={oldest}"
                next_url = f"{base}?{direction}&limit={limit}"
        head = _dumps({"href": href, "limit": limit, "next": next_url, "cursors": cursors})
        return head[:-1] + b',"items":[' + items + b"]}"

    def _item_json(self, kind: int, index: int) -> bytes:
        key = (kind, index)
        cached = self._fragments.get(key)
        if cached is None:
            item = self.objects.context(index) if kind < 0 else self.objects.item(kind, index)
            cached = _dumps(item)
            self._fragments[key] = cached
        return cached

    def _context_json(self, index: int) -> bytes:
        return self._item_json(-1, index) if index >= 0 else b"null"

    async def currently_playing(self, request: Request) -> Response:
        grant = await self._admit(request, "currently-playing")
        if isinstance(grant, Response):
            return grant
        if malformed := self._malformed(grant):
            return malformed
        types = set(request.query_params.get("additional_types", "").split(","))
        with self.lock:
            state = self.now_playing(self.world.by_id[grant.user_id], "episode" in types)
        return Response(status_code=204) if state is None else _json(state)

    def now_playing(self, user: User, with_episodes: bool) -> dict[str, Any] | None:
        """What ``user`` is playing right now, as currently-playing answers (None: 204)."""
        now = self.clock.now_ms()
        t = self.world.timeline(user, now)
        current = int(np.searchsorted(t.start_ms, now, side="right")) - 1
        base: dict[str, Any] = {"timestamp": now, "context": None, "actions": {"disallows": {}}}
        if current >= 0 and now < t.end_ms[current]:
            elapsed = now - int(t.start_ms[current])
            pause_at, pause = int(t.pause_at_ms[current]), int(t.pause_ms[current])
            paused = pause > 0 and pause_at <= elapsed < pause_at + pause
            progress = (
                pause_at
                if paused
                else elapsed - (pause if elapsed >= pause_at + pause and pause else 0)
            )
            kind = int(t.kind[current])
            episode = kind == KIND_EPISODE
            item = self.objects.item(kind, int(t.item[current]))
            return {
                **base,
                "context": self.objects.context(int(t.context[current])),
                "progress_ms": progress,
                "is_playing": not paused,
                "item": None if episode and not with_episodes else item,
                "currently_playing_type": "episode" if episode else "track",
            }
        following = current + 1
        if (
            following < len(t.start_ms)
            and t.ad_before[following]
            and now >= t.start_ms[following] - 30_000
        ):
            return {
                **base,
                "progress_ms": now - int(t.start_ms[following]) + 30_000,
                "is_playing": True,
                "item": None,
                "currently_playing_type": "ad",
            }
        return None

    async def track(self, request: Request) -> Response:
        grant = await self._admit(request, "tracks")
        if isinstance(grant, Response):
            return grant
        track_id = request.path_params["track_id"]
        if not _SPOTIFY_ID.match(track_id):
            return _api_error(400, "invalid id")
        index = self.track_index.get(track_id)
        if index is None:
            return _api_error(404, "Non existing id")
        return self._malformed(grant) or _json(self.objects.track(index))

    # Control endpoints (the simulator's own, under /_sim)

    async def sim_users(self, request: Request) -> Response:
        return _json(
            [
                {
                    "user_id": u.user_id,
                    "display_name": u.display_name,
                    "timezone": u.timezone,
                    "country": u.country,
                    "group": u.group,
                    "cluster": u.cluster,
                    "premium": u.premium,
                }
                for u in self.world.users
            ]
        )

    async def sim_ground_truth(self, request: Request) -> Response:
        user = request.query_params.get("user")
        with self.lock:
            rows = self.world.ground_truth(self.clock.now_ms(), {user} if user else None)
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return Response(body, media_type="application/x-ndjson")

    async def sim_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            self.quota.clear_faults()
            return _json({"faults": "cleared"})
        try:
            spec = await request.json()
            self.faults.fail_next = int(spec.get("fail_next", self.faults.fail_next))
            self.faults.fail_status = int(spec.get("fail_status", self.faults.fail_status))
            self.faults.malformed_next = int(spec.get("malformed_next", self.faults.malformed_next))
            self.faults.slow_ms = int(spec.get("slow_ms", self.faults.slow_ms))
            self.faults.only_user = spec.get("only_user", self.faults.only_user)
            if "storm_seconds" in spec:
                self.faults.storm_until = time.monotonic() + float(spec["storm_seconds"])
                self.faults.storm_retry_after = int(spec.get("storm_retry_after", 2))
            if "daily_quota" in spec:
                quota = spec["daily_quota"]
                if quota is not None and int(quota) < 1:
                    raise ValueError("daily_quota must be at least 1, or null for none")
                self.quota.quota = None if quota is None else int(quota)
            if "quota_lock" in spec:
                lock = spec["quota_lock"]
                self.quota.lock(str(lock["account"]), float(lock["hours"]) * 3600)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return _json({"error": f"bad fault specification: {exc}"}, 400)
        return _json({"faults": "set"})

    async def sim_revoke(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if user_id not in self.world.by_id:
            return _json({"error": "unknown user"}, 404)
        return _json({"revoked": self.accounts.revoke_user(user_id)})

    async def sim_expire_tokens(self, request: Request) -> Response:
        return _json({"expired": self.accounts.expire_access_tokens()})

    async def sim_clock(self, request: Request) -> Response:
        if request.method == "POST":
            spec = await request.json()
            self.clock.advance(float(spec.get("advance_seconds", 0)))
            if "speed" in spec:
                self.clock.set_speed(float(spec["speed"]))
        now = self.clock.now_ms()
        return _json({"now": iso_ms(now), "now_ms": now, "speed": self.clock.speed})

    async def sim_play(self, request: Request) -> Response:
        user = self.world.by_id.get(request.path_params["user_id"])
        if user is None:
            return _json({"error": "unknown user"}, 404)
        spec = await request.json() if await request.body() else {}
        track_id = spec.get("track_id")
        track = (
            self.track_index.get(track_id)
            if track_id
            else int(np.random.default_rng(self.clock.now_ms()).integers(self.world.catalog.size))
        )
        if track is None:
            return _json({"error": f"unknown track {track_id}"}, 404)
        with self.lock:
            self.world.force_play(user, self.clock.now_ms(), track)
        return _json({"playing": self.world.item(0, track)})

    async def sim_stats(self, request: Request) -> Response:
        return _json(
            {
                **self.calls,
                "429": self.refused["rate_limit"],  # the older name of refused.rate_limit
                "refused": dict(self.refused),
                "daily_quota": self.quota.quota,
                "developer_accounts": self.quota.snapshot(),
            }
        )

    async def sim_art(self, request: Request) -> Response:
        """A generated cover, so album art works with no internet."""
        digest = hashlib.sha256(request.path_params["art_id"].encode()).hexdigest()
        one, two = f"#{digest[:6]}", f"#{digest[6:12]}"
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300">'
            f'<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
            f'<stop offset="0" stop-color="{one}"/><stop offset="1" stop-color="{two}"/>'
            f'</linearGradient></defs><rect width="300" height="300" fill="url(#g)"/>'
            f'<circle cx="150" cy="150" r="{40 + int(digest[12:14], 16) % 60}" '
            f'fill="none" stroke="#fff" stroke-opacity=".5" stroke-width="6"/></svg>'
        )
        return Response(
            svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self.authorize),
                Route("/api/token", self.token, methods=["POST"]),
                Route("/v1/me", self.me),
                Route("/v1/me/player/recently-played", self.recently_played),
                Route("/v1/me/player/currently-playing", self.currently_playing),
                Route("/v1/tracks/{track_id}", self.track),
                Route("/_sim/users", self.sim_users),
                Route("/_sim/ground-truth", self.sim_ground_truth),
                Route("/_sim/faults", self.sim_faults, methods=["POST", "DELETE"]),
                Route("/_sim/users/{user_id}/revoke", self.sim_revoke, methods=["POST"]),
                Route("/_sim/users/{user_id}/play", self.sim_play, methods=["POST"]),
                Route("/_sim/tokens/expire", self.sim_expire_tokens, methods=["POST"]),
                Route("/_sim/clock", self.sim_clock, methods=["GET", "POST"]),
                Route("/_sim/stats", self.sim_stats),
                Route("/_sim/art/{art_id}.svg", self.sim_art),
            ]
        )
