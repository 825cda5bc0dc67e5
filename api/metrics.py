"""Prometheus metrics for the web app: request counts and latency, and the pipeline's health
read from MongoDB at scrape time (so a scrape always sees the current state)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo.database import Database
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import reads


class HealthCollector(Collector):
    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = reads.health(self.database)
        yield GaugeMetricFamily(
            "auxcord_users_stale", "Users not polled successfully for 10 minutes",
            value=len(health["stale_users"]),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "auxcord_users_needs_reauth", "Users who must sign in again",
            value=len(health["needs_reauth"]),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "auxcord_dead_letters", "Messages the streaming job could not store",
            value=health["dead_letters"],
        )  # fmt: skip
        if health["pipeline_lag_s"] is not None:
            yield GaugeMetricFamily(
                "auxcord_pipeline_lag_seconds", "Age of the newest stored play",
                value=health["pipeline_lag_s"],
            )  # fmt: skip


class WebMetrics:
    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "auxcord_http_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "auxcord_http_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
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
