"""Prometheus metrics for the web app: request counts and latency, and the pipeline's health.

The health gauges are counted by MongoDB (never by reading every user and poll state here) at
most once per :data:`HEALTH_REFRESH_S`, however often ``/metrics`` is scraped: a scrape costs a
cached snapshot, so hammering the endpoint cannot load the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo import DESCENDING
from pymongo.database import Database
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auxcord.names import Collection
from auxcord.pollhealth import STALE_AFTER

HEALTH_REFRESH_S = 30.0
"""How old the health gauges may be: Prometheus scrapes every 15 to 60 s."""


@dataclass(frozen=True)
class HealthCounts:
    stale_users: int
    needs_reauth: int
    dead_letters: int
    pipeline_lag_s: float | None


def count_health(database: Database[dict[str, Any]], now: datetime | None = None) -> HealthCounts:
    """The health gauges, counted server-side (the same rules as the admin page's table).

    A user is stale when they need no re-authorisation and their poll state shows no success
    within ``STALE_AFTER``: one aggregation joins each user to their poll state by id and
    counts, so only a number crosses the wire.
    """
    moment = now or datetime.now(UTC)
    stale = database[Collection.USERS].aggregate(
        [
            {"$match": {"needs_reauth": {"$ne": True}}},
            {
                "$lookup": {
                    "from": str(Collection.POLL_STATE),
                    "localField": "_id",
                    "foreignField": "_id",
                    "as": "state",
                }
            },
            {"$match": {"state.last_success_at": {"$not": {"$gte": moment - STALE_AFTER}}}},
            {"$count": "stale"},
        ]
    )
    newest = database[Collection.LISTENS].find_one(
        {}, {"played_at": 1}, sort=[("played_at", DESCENDING)]
    )  # the played_at index: one key read
    played_at = newest["played_at"] if newest else None
    if played_at is not None and played_at.tzinfo is None:
        played_at = played_at.replace(tzinfo=UTC)
    return HealthCounts(
        stale_users=next(stale, {"stale": 0})["stale"],
        needs_reauth=database[Collection.USERS].count_documents({"needs_reauth": True}),
        dead_letters=database[Collection.DEAD_LETTERS].estimated_document_count(),
        pipeline_lag_s=(moment - played_at).total_seconds() if played_at else None,
    )


class HealthCollector(Collector):
    """Yields the health gauges from a snapshot at most :data:`HEALTH_REFRESH_S` old."""

    def __init__(
        self,
        database: Database[dict[str, Any]],
        *,
        refresh_s: float = HEALTH_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.refresh_s = refresh_s
        self.clock = clock
        self.lock = threading.Lock()  # concurrent scrapes wait for one count, not run several
        self.snapshot: HealthCounts | None = None
        self.taken_at = 0.0

    def counts(self) -> HealthCounts:
        with self.lock:
            if self.snapshot is None or self.clock() - self.taken_at >= self.refresh_s:
                self.snapshot = count_health(self.database)
                self.taken_at = self.clock()
            return self.snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self.counts()
        yield GaugeMetricFamily(
            "auxcord_users_stale",
            "Users not polled successfully for 10 minutes",
            value=health.stale_users,
        )
        yield GaugeMetricFamily(
            "auxcord_users_needs_reauth",
            "Users who must sign in again",
            value=health.needs_reauth,
        )
        yield GaugeMetricFamily(
            "auxcord_dead_letters",
            "Messages the streaming job could not store",
            value=health.dead_letters,
        )
        if health.pipeline_lag_s is not None:
            yield GaugeMetricFamily(
                "auxcord_pipeline_lag_seconds",
                "Age of the newest stored play",
                value=health.pipeline_lag_s,
            )


class WebMetrics:
    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "auxcord_http_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "auxcord_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.registry.register(HealthCollector(database))


class MetricsMiddleware:
    """Counts requests per route template (``/groups/{group_id}``), never per raw path, so
    group ids and tokens stay out of the metrics. Plain ASGI, like SecurityHeaders."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        streaming = False

        async def observe(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
                streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            if not streaming:
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
