"""``auxcord stream``: Kafka to GCS and MongoDB with Spark Structured Streaming."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from auxcord.settings import get_settings


def stream_command(
    available_now: Annotated[
        bool,
        typer.Option("--available-now", help="Drain what Kafka holds now, then exit."),
    ] = False,
    trigger_seconds: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds between micro-batches (AUXCORD_STREAM_TRIGGER_SECONDS)."),
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most Kafka records per micro-batch (AUXCORD_STREAM_MAX_ROWS_PER_TRIGGER)."
        ),
    ] = None,
) -> None:
    """Store every listen once in MongoDB and GCS, keep now-playing current, dead-letter poison."""
    from streaming.job import run_stream

    settings = get_settings()
    overrides: dict[str, float | int] = {}
    if trigger_seconds is not None:
        overrides["stream_trigger_seconds"] = trigger_seconds
    if max_rows is not None:
        overrides["stream_max_rows_per_trigger"] = max_rows
    settings = settings.model_copy(update=overrides)
    console = Console()
    mode = "draining what Kafka holds" if available_now else "running until Ctrl-C"
    console.print(f"auxcord stream: {mode}; checkpoint {settings.stream_checkpoint}")
    totals = run_stream(settings, available_now=available_now)
    console.print(
        f"stored {totals.new_listens:,} new listens ({totals.listens:,} read), "
        f"{totals.now_playing:,} now-playing states, {totals.dead_letters:,} dead letters, "
        f"{totals.objects:,} Parquet objects, from {totals.records:,} Kafka records"
    )
