"""``auxcord poll``: run the pollers for every linked user (or one shard of them)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Annotated

import typer

from auxcord.settings import get_settings


def poll_command(
    once: Annotated[
        bool, typer.Option("--once", help="One round for every user, then exit.")
    ] = False,
    shard: Annotated[
        str | None, typer.Option(help="Poll only shard i of N (i/N), for several poller processes.")
    ] = None,
) -> None:
    """Poll Spotify for every linked user and publish plays and now-playing changes to Kafka."""
    from prometheus_client import start_http_server

    from producers.poller import Poller, PollerConfig, parse_shard

    settings = get_settings()
    parsed = parse_shard(shard)
    config = PollerConfig(
        speed=settings.poller_speed,
        daily_budget=settings.spotify_daily_budget,
        app_budget_30s=settings.poller_budget,
    )
    owner = settings.poller_id or f"{socket.gethostname()}:{os.getpid()}"
    poller = Poller(settings, config, owner=owner, shard=parsed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if settings.poller_metrics_port and not once:
        start_http_server(settings.poller_metrics_port, registry=poller.metrics.registry)
    try:
        poller.run(stop, once=once)
    except KeyboardInterrupt:
        stop.set()
