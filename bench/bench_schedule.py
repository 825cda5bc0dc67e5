"""The polling plan against its daily budget, in simulation: what each budget buys the live feed.

Runs :class:`producers.schedule.PollEngine` against devtools/schedule_sim.py's fake Spotify (no
servers, virtual time): five friends on one developer account for ``--days`` days, one of them
bingeing 30 s tracks for two hours every night, the other four listening about 2.5 hours a day
with skips, part-way stops and pauses. Token refreshes count against the quota, as the
simulator's default assumes. For each budget, over ``--seeds`` different weeks, it prints the
medians (and the worst seed) of:

- calls per user per day, all calls and token refreshes included, and the most in any rolling
  24 h against the budget;
- plays missed against the fake's ground truth, and gaps recorded;
- the live feed for the four friends who are not bingeing: seconds from each track change inside
  a session already on the feed until the feed shows that track or a later one (a change it
  never catches up with counts as infinitely late), and the share of played tracks it never
  showed; then the same for the binger;
- session starts: from a session's first play to its first event on the feed.

    .venv/bin/python bench/bench_schedule.py [--budgets 750 1000 1250 1500 2500] [--days 4]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass

from devtools.schedule_sim import Run, five_friends, live_delays, simulate

FRIENDS = ["user1", "user2", "user3", "user4"]
BINGER = "user0"


@dataclass(frozen=True)
class Figures:
    calls_per_user_day: float
    most_in_24h: int
    missed: int
    gaps: int
    changes: list[float]
    binger_changes: list[float]
    starts: list[float]
    never_shown: float


def pct(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else math.nan


def figures(run: Run, days: int) -> Figures:
    changes, starts = live_delays(run, FRIENDS)
    binger, _ = live_delays(run, [BINGER])
    shown = {
        (event.user_id, event.track_id)
        for event in run.kafka.now_playing
        if event.state in ("started", "track_changed")
    }
    played = [
        (user, play.item()["id"])
        for user in FRIENDS
        for play in run.listeners[user].listed
        if play.end <= run.spotify.clock.now()
    ]
    return Figures(
        calls_per_user_day=len(run.spotify.calls["app"]) / len(run.listeners) / days,
        most_in_24h=run.spotify.most_in_a_day("app"),
        missed=sum(len(plays) for plays in run.missing().values()),
        gaps=len(run.state.gaps),
        changes=changes,
        binger_changes=binger,
        starts=starts,
        never_shown=sum(key not in shown for key in played) / max(1, len(played)),
    )


def seconds(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0f} s"


def report(budget: int, runs: list[Figures]) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    def spread(share: float, key: str) -> str:
        values = [pct(getattr(figures, key), share) for figures in runs]
        return f"{seconds(median(values))} (worst {seconds(max(values))})"

    print(
        f"budget {budget} ({budget / 5:.0f} a user a day): "
        f"{median([f.calls_per_user_day for f in runs]):.1f} calls per user per day, "
        f"most in 24 h {max(f.most_in_24h for f in runs)}; "
        f"missed {sum(f.missed for f in runs)} plays, gaps {sum(f.gaps for f in runs)}\n"
        f"  friends' track changes: p50 {spread(0.5, 'changes')}, p75 {spread(0.75, 'changes')}, "
        f"p90 {spread(0.9, 'changes')}, p95 {spread(0.95, 'changes')}; "
        f"played tracks never shown {median([f.never_shown for f in runs]):.0%}\n"
        f"  the binger's track changes: p50 {spread(0.5, 'binger_changes')}, "
        f"p95 {spread(0.95, 'binger_changes')}\n"
        f"  session starts: p50 {median([pct(f.starts, 0.5) for f in runs]) / 60:.1f} min, "
        f"p95 {median([pct(f.starts, 0.95) for f in runs]) / 60:.1f} min "
        f"(worst {max(pct(f.starts, 0.95) for f in runs) / 60:.1f} min)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[750, 1000, 1250, 1500, 2500])
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=6, help="weeks of listening per budget")
    args = parser.parse_args()
    # Gaps are expected in some weeks and are counted; their warnings would bury the table.
    logging.disable(logging.WARNING)
    started = time.process_time()
    print(
        f"{len(FRIENDS) + 1} friends on one developer account, {args.days} days, "
        f"{args.seeds} weeks per budget"
    )
    for budget in args.budgets:
        weeks = [five_friends(args.days, seed=seed) for seed in range(2, 2 + args.seeds)]
        runs = [figures(simulate(week, args.days, budget=budget), args.days) for week in weeks]
        report(budget, runs)
    print(f"{time.process_time() - started:.1f} s of CPU")


if __name__ == "__main__":
    main()
