"""The ``auxcord`` command: one entry point, a subcommand per component.

Components keep their command functions beside their code; this module only registers them, and
imports each lazily through :func:`_lazy` so that ``auxcord --help`` never loads Spark or Airflow.
Every :class:`~auxcord.errors.AuxcordError` becomes one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from analytics.cli import aggregate_command, backfill_command, sql_command
from analytics.recommend.cli import recommend_command
from auxcord.errors import AuxcordError
from auxcord.settings import get_settings
from devtools.simulator.cli import simulate_command
from producers.cli import poll_command
from producers.import_cli import import_command
from streaming.cli import stream_command

if TYPE_CHECKING:
    from devtools.stack import ServiceStatus

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="auxcord",
    help="Social listening for small groups of friends: every Spotify play, shared stats.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(
    help="Start, stop and inspect the local Kafka, MongoDB, GCS and Airflow servers.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the stack keeps its data, pid files and logs (default: AUXCORD_DATA_DIR).",
        file_okay=False,
    ),
]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every reconnect attempt, some at ERROR; it drowns the CLI while servers
    # start, and when a broker stays away its error reaches the user as one line anyway.
    logging.getLogger("kafka").setLevel(logging.ERROR if verbose else logging.CRITICAL)
    # httpx logs every URL at INFO, and sign-in URLs carry one-time codes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # py4j logs every call between Python and Spark's JVM at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)


# Component commands live beside their code; their modules import heavy libraries lazily.
app.command("simulate")(simulate_command)
app.command("recommend")(recommend_command)
app.command("poll")(poll_command)
app.command("import")(import_command)
app.command("stream")(stream_command)
app.command("aggregate")(aggregate_command)
app.command("backfill")(backfill_command)
app.command("sql")(sql_command)


def _use_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None:
        os.environ["AUXCORD_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()


@stack_app.command("up")
def stack_up(
    data_dir: DataDirOption = None,
    with_airflow: Annotated[
        bool,
        typer.Option(
            "--airflow/--no-airflow",
            help="Start Airflow too (20 to 70 s until healthy, about 1.3 GB).",
        ),
    ] = True,
) -> None:
    """Start the local servers (harmless if they already run) and wait until all answer."""
    from devtools.stack import LocalStack

    _use_data_dir(data_dir)
    stack = LocalStack(get_settings(), airflow=with_airflow)
    statuses = stack.up(on_progress=lambda line: console.print(f"[dim]·[/dim] {line}"))
    _print_status(statuses)


@stack_app.command("down")
def stack_down(data_dir: DataDirOption = None) -> None:
    """Stop the local servers started from this data dir, and nothing else."""
    from devtools.stack import LocalStack

    _use_data_dir(data_dir)
    LocalStack(get_settings()).down(on_progress=lambda line: console.print(f"[dim]·[/dim] {line}"))


@stack_app.command("status")
def stack_status(data_dir: DataDirOption = None) -> None:
    """Show each local server's port, pid and whether it answers now. Exit 1 if any is down."""
    from devtools.stack import LocalStack

    _use_data_dir(data_dir)
    statuses = LocalStack(get_settings()).status()
    _print_status(statuses)
    if not all(status.ready for status in statuses):
        raise typer.Exit(1)


@app.command(
    "airflow",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def airflow_cli(context: typer.Context) -> None:
    """Airflow's own CLI on the local stack's Airflow (its home, database, DAGs and the
    AUXCORD_* settings), e.g. `auxcord airflow backfill create --dag-id auxcord_daily
    --from-date 2026-11-01 --to-date 2026-11-07 --max-active-runs 1`."""
    import subprocess

    from devtools import airflow

    settings = get_settings()
    command = [str(airflow.airflow_executable()), *context.args]
    environment = {**os.environ, **airflow.environment(settings)}
    raise typer.Exit(subprocess.run(command, env=environment, check=False).returncode)


@app.command("provision")
def provision() -> None:
    """Create Kafka topics, the GCS bucket and every MongoDB index on the configured servers.

    Safe to run again. Production runs it once per deployment; ``stack up`` creates the
    topics and the bucket locally, and each component the indexes it needs.
    """
    from auxcord.clients import ensure_bucket, ensure_topics, mongo_database
    from auxcord.indexes import INDEXES, ensure_indexes

    settings = get_settings()
    created = ensure_topics(settings)
    console.print(f"Kafka topics created: {', '.join(created) or 'none (all present)'}")
    bucket = "created" if ensure_bucket(settings) else "present"
    console.print(f"GCS bucket {settings.gcs_bucket}: {bucket}")
    indexes = ensure_indexes(mongo_database(settings))
    console.print(
        f"MongoDB indexes: {len(indexes)} in place on {len(INDEXES)} collections "
        f"of {settings.mongodb_database}"
    )


@app.command("link")
def link(
    simulated: Annotated[
        bool, typer.Option("--simulated", help="Link every user of the running simulator.")
    ] = False,
) -> None:
    """Link Spotify accounts. Real users sign in on the dashboard; --simulated links them all."""
    if not simulated:
        settings = get_settings()
        redirect = settings.spotify_redirect_uri.rsplit("/auth/", 1)[0]
        console.print(f"Each friend signs in with Spotify at {redirect}/ (run `auxcord serve`).")
        console.print("For the simulator, run `auxcord link --simulated`.")
        return
    from devtools.linking import link_simulated_users

    linked = link_simulated_users(get_settings())
    table = Table(title=f"Linked {len(linked)} simulated users")
    for column in ("user", "name", "timezone", "group"):
        table.add_column(column)
    for user in linked:
        table.add_row(user.user_id, user.display_name, user.timezone, str(user.group))
    console.print(table)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default AUXCORD_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default AUXCORD_API_PORT).")] = None,
) -> None:
    """Serve the dashboard and the JSON API."""
    from cli.webserver import serve as serve_app

    settings = get_settings()
    console.print(f"auxcord on http://{host or settings.api_host}:{port or settings.api_port}/")
    serve_app(settings, host or settings.api_host, port or settings.api_port)


@app.command("demo")
def demo() -> None:
    """Run the whole pipeline on a simulated friend group and print what runs where."""
    from cli.demo import run_demo

    run_demo(get_settings(), console)


def _print_status(statuses: list[ServiceStatus]) -> None:
    table = Table(title="auxcord local stack")
    for column in ("service", "port", "pid", "state", "data"):
        table.add_column(column)
    for status in statuses:
        state = (
            "[green]ready[/green]"
            if status.ready
            else (
                "[yellow]running, not answering[/yellow]"
                if status.running
                else "[red]stopped[/red]"
            )
        )
        port = "-" if status.port is None else str(status.port)
        table.add_row(status.name, port, str(status.pid or "-"), state, status.data)
    console.print(table)


def main() -> None:
    """Console-script entry point: run the app, turning auxcord errors into one clear line.

    MongoDB, Kafka and GCS failures the user must act on (a server away, credentials refused)
    become auxcord errors here too; anything else is a bug and keeps its traceback.
    """
    from auxcord.clients import service_errors

    try:
        with service_errors(get_settings):
            app()
    except AuxcordError as exc:
        # One line however long: rich would wrap it at the terminal's width.
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)
