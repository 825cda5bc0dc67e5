"""Geometry for the dashboard's SVG charts, computed here so templates only draw.

The pages draw charts as inline SVG with presentation attributes: no chart library to vendor,
nothing for the Content-Security-Policy to allow, and they render before any script runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    label: str


def column_chart(
    values: list[float], labels: list[str], width: float = 720, height: float = 160
) -> list[Bar]:
    """Vertical bars for ``values``, scaled so the largest fills ``height``."""
    if not values:
        return []
    top = max(values) or 1.0
    slot = width / len(values)
    gap = min(4.0, slot * 0.2)
    return [
        Bar(
            x=round(i * slot + gap / 2, 2),
            y=round(height - value / top * height, 2),
            width=round(slot - gap, 2),
            height=round(value / top * height, 2),
            value=value,
            label=label,
        )
        for i, (value, label) in enumerate(zip(values, labels, strict=True))
    ]


def intensity(value: float, top: float) -> float:
    """A fill opacity between 0.08 and 1 for heatmap cells (0 stays nearly blank)."""
    if top <= 0 or value <= 0:
        return 0.04
    return round(0.12 + 0.88 * value / top, 3)


def day_labels(days: list[date]) -> list[str]:
    return [f"{day:%a %d %b}" for day in days]


@dataclass(frozen=True)
class MatchCell:
    row: int
    column: int
    score: float | None
    opacity: float
    shared: list[str]


def match_matrix(members: list[str], pairs: list[dict[str, object]]) -> list[MatchCell]:
    """The symmetric taste-match matrix of ``members`` from the stored pairwise scores."""
    scores: dict[tuple[str, str], dict[str, object]] = {}
    for pair in pairs:
        a, b = str(pair["user_a"]), str(pair["user_b"])
        scores[(a, b)] = scores[(b, a)] = pair
    cells = []
    for row, a in enumerate(members):
        for column, b in enumerate(members):
            found = scores.get((a, b))
            if a == b or found is None:
                cells.append(MatchCell(row, column, None, 0.04, []))
                continue
            score = float(found["score"])  # type: ignore[arg-type]
            shared = [
                str(artist["artist_name"])
                for artist in found.get("shared_artists") or []  # type: ignore[attr-defined]
            ]
            cells.append(MatchCell(row, column, score, intensity(score, 1.0), shared))
    return cells
