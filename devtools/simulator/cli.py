"""``auxcord simulate``: serve the Spotify simulator on loopback until Ctrl-C."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

from auxcord.errors import AuxcordError
from auxcord.settings import get_settings

DEFAULT_RATE_BUDGET = 600
"""API calls per client id per rolling 30 s. Spotify does not publish its figure."""


def _parse_apps(apps: str) -> dict[str, str]:
    parsed = {}
    for pair in filter(None, apps.split(",")):
        client_id, sep, secret = pair.partition(":")
        if not sep or not client_id or not secret:
            raise AuxcordError(f"--apps expects id:secret[,id:secret...], got {pair!r}")
        parsed[client_id] = secret
    return parsed


def _parse_developer_accounts(specs: list[str]) -> dict[str, tuple[str, ...]]:
    accounts: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        account, sep, clients = spec.partition("=")
        ids = tuple(client.strip() for client in clients.split(","))
        if not sep or not account.strip() or not all(ids):
            raise AuxcordError(
                f"--developer-account expects ACCOUNT=client_id,client_id..., got {spec!r}"
            )
        accounts[account.strip()] = accounts.get(account.strip(), ()) + ids
    return accounts


def _parse_daily_quota(quota: str | None) -> int | None:
    """Parsed here, not by typer, so a bad value is one error line rather than a usage box."""
    if quota is None:
        return None
    try:
        return int(quota)
    except ValueError:
        raise AuxcordError(
            f"--daily-quota expects a whole number of calls per 24 h, got {quota!r}"
        ) from None


def _parse_start(start: str | None) -> datetime | None:
    if start is None:
        return None
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        raise AuxcordError(f"--start expects an ISO 8601 time, got {start!r}") from None
    if moment.tzinfo is None:
        raise AuxcordError(f"--start needs a time zone (like 2026-11-20T18:00Z), got {start!r}")
    return moment


def simulate_command(
    users: Annotated[int, typer.Option(help="Simulated Spotify users.")] = 6,
    days: Annotated[int, typer.Option(help="Days of history generated before now.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same history.")] = 7,
    speed: Annotated[float, typer.Option(help="Virtual seconds per real second.")] = 60.0,
    port: Annotated[
        int | None, typer.Option(help="Port (default: the one in AUXCORD_SPOTIFY_API_BASE).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    groups: Annotated[int, typer.Option(help="Friend groups the users form.")] = 1,
    rate_budget: Annotated[
        int, typer.Option(help="API calls per client id per rolling 30 s.")
    ] = DEFAULT_RATE_BUDGET,
    apps: Annotated[
        str,
        typer.Option(
            help="Check secrets for these apps: id:secret,id:secret (default: accept any)."
        ),
    ] = "",
    start: Annotated[
        str | None,
        typer.Option(help="Virtual time when live simulation begins, ISO 8601 (default: now)."),
    ] = None,
    daily_quota: Annotated[
        str | None,
        typer.Option(
            help="API calls per developer account per rolling 24 virtual hours; beyond it, "
            "429 QUOTA_EXCEEDED with a Retry-After of hours (default: no quota).",
            metavar="N",
        ),
    ] = None,
    developer_account: Annotated[
        list[str] | None,
        typer.Option(
            help="Group client ids into one developer account (whose quota they share): "
            "ACCOUNT=client_id,client_id; repeatable (default: each client id is its own).",
        ),
    ] = None,
    quota_counts_accounts: Annotated[
        bool,
        typer.Option(
            help="Token requests (sign-ins, refreshes) count against the daily quota and are "
            "refused during a lockout."
        ),
    ] = True,
    ground_truth: Annotated[
        Path | None,
        typer.Option(help="Write every generated play here as JSON lines on exit.", dir_okay=False),
    ] = None,
) -> None:
    """Serve a simulated Spotify (accounts service and Web API) for tests and the demo."""
    from devtools.simulator.server import RunningSimulator, SimulatorConfig

    if port is None:
        port = urlsplit(get_settings().spotify_api_base).port or 18800
    config = SimulatorConfig(
        users=users,
        days=days,
        seed=seed,
        speed=speed,
        port=port,
        host=host,
        groups=groups,
        rate_budget=rate_budget,
        apps=_parse_apps(apps),
        start=_parse_start(start),
        daily_quota=_parse_daily_quota(daily_quota),
        developer_accounts=_parse_developer_accounts(developer_account or []),
        quota_counts_accounts=quota_counts_accounts,
    )
    simulator = RunningSimulator(config)
    console = Console()
    console.print(
        f"Simulated Spotify on [bold]{simulator.url}[/bold] "
        f"({users} users, {days} days of history, speed x{speed:g}, "
        f"{f'a daily quota of {config.daily_quota}' if config.daily_quota else 'no daily quota'})."
    )
    console.print(
        f"  API base:      {simulator.api_base}\n  accounts base: {simulator.url}\n"
        f"  ground truth:  {simulator.url}/_sim/ground-truth"
    )
    try:
        simulator.serve_forever()
    finally:
        if ground_truth is not None:
            from devtools.simulator.server import write_ground_truth

            count = write_ground_truth(simulator, ground_truth)
            console.print(f"wrote {count} plays to {ground_truth}")
