"""Serving the web app with uvicorn: in the foreground (``auxcord serve``) or in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from auxcord.errors import AuxcordError
from auxcord.settings import Settings


def _server(settings: Settings, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    from api.app import create_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise AuxcordError(
            f"the web app cannot listen on {host}:{port} ({exc.strerror}); set AUXCORD_API_PORT"
        ) from exc
    # Open live feeds (Server-Sent Events) never end by themselves: cut them on shutdown.
    # Forwarded headers only from the configured proxies: the client address they name is what
    # sign-in rate limits and live-feed caps count by.
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config), listener


def serve(settings: Settings, host: str, port: int) -> None:
    server, listener = _server(settings, host, port)
    server.run(sockets=[listener])


@contextmanager
def serve_in_thread(settings: Settings, host: str, port: int) -> Iterator[str]:
    """Serve the app from a background thread; yields its base URL."""
    server, listener = _server(settings, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AuxcordError("the web app did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
