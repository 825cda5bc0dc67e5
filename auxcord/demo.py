"""``make demo``: every component built so far, on the local stack and a simulated group.

Each component that lands adds its step here, so one command always shows the whole pipeline.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from auxcord.settings import Settings
from auxcord.stack import LocalStack


def run_demo(settings: Settings, console: Console) -> None:
    """Start everything, print where it runs, and keep serving until Ctrl-C."""
    console.rule("[bold]auxcord demo")
    stack = LocalStack(settings)
    stack.up(on_progress=lambda line: console.print(f"[dim]·[/dim] {line}"))

    table = Table(title="Running", show_lines=False)
    table.add_column("component")
    table.add_column("where")
    table.add_row("Kafka (Tansu)", settings.kafka_bootstrap)
    table.add_row("MongoDB (SecantusDB)", settings.mongodb_uri)
    table.add_row(
        "GCS (fake-gcs-server)", f"{settings.storage_emulator_host}  bucket {settings.gcs_bucket}"
    )
    console.print(table)
    console.print(
        "The local servers keep running after the demo; stop them with "
        "[bold]make stack-down[/bold]. Press Ctrl-C to end the demo."
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("demo stopped")
