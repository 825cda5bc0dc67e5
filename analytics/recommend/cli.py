"""``auxcord recommend``: train, evaluate and store recommendations now."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from auxcord.settings import get_settings


def recommend_command(
    n: Annotated[int, typer.Option("--n", min=1, max=100, help="Tracks per user.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: the same data and seed, the same result.")] = 42,
) -> None:
    """Recommend tracks friends love that each user hasn't heard, and report the evaluation."""
    from analytics.jobs import recommend

    run = recommend(get_settings(), n=n, seed=seed)
    console = Console()
    evaluation = run.evaluation
    if evaluation is not None:
        table = Table(title=f"Recommendations run {run.run_id}: {len(run.documents)} users")
        for column in ("model", "hit-rate@10", "NDCG@10", "coverage"):
            table.add_column(column)
        for name, scores in (
            ("ALS", evaluation.als),
            ("popularity in group", evaluation.popularity),
        ):
            table.add_row(
                name, f"{scores.hit_rate:.3f}", f"{scores.ndcg:.3f}", f"{scores.coverage:.3f}"
            )
        console.print(table)
        console.print(
            f"chosen on validation: {evaluation.chosen}; "
            f"{evaluation.users_evaluated} users evaluated on their last 7 days"
        )
    if run.fallback_reason is not None:
        console.print(
            f"Run {run.run_id}: {len(run.documents)} users got what is popular in their groups, "
            f"not ALS: {run.fallback_reason.message}."
        )
