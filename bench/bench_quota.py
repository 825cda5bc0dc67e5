"""Pollers under Spotify's daily quota: a week of five friends on one developer account.

The simulator enforces a rolling 24 h quota of 1,000 calls per developer account (token
refreshes count, as its default says). Five simulated listeners share one app, and the first of
them also binges 30 s tracks for two virtual hours every night (about 200 forced plays a night,
four windows' worth of recently-played). One ``auxcord poll`` process polls them for
``--days`` virtual days with ``AUXCORD_SPOTIFY_DAILY_BUDGET`` at ``--budget``. Reported:

- calls per developer account in every rolling 24 h (sampled each virtual hour from the
  simulator's own count), calls per user per day, against naive polling and the previous
  poller; ``QUOTA_EXCEEDED`` refusals;
- plays missed against the ground truth;
- the live feed: from each track change inside a session already on the feed until the feed
  shows that track or a later one (a change it never catches up with counts as infinitely late),
  and from each session's first play to the session's first record.

``--lockout`` runs the forced lockout instead: two virtual days, the account locked out for 14
virtual hours from just before the second night's binge. Every lost play must fall inside a
recorded gap and every gap must hold a lost play; then the binger's Extended export is imported
(``producers.history.import_history``), and Kafka must hold every play of theirs exactly once.

Needs the local stack (`auxcord stack up`, or the AUXCORD_* variables).

    .venv/bin/python bench/bench_quota.py [--days 7] [--speed 1000] [--budget 750]
    .venv/bin/python bench/bench_quota.py --lockout [--speed 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_producers import read_topic  # run as bench/bench_quota.py

from auxcord.clients import ensure_topics, mongo_client, mongo_database
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.names import Collection, Topic
from auxcord.settings import Settings, get_settings
from devtools.linking import link_simulated_users
from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from devtools.simulator.export import write_extended_zip
from producers.history.importer import import_history

START = datetime(2026, 11, 2, tzinfo=UTC)
"""A fixed virtual start, so that every run replays the same listeners."""
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BINGE_HOUR = 2
"""The binge starts at 02:00 UTC each virtual night, for two hours."""
BINGE_GAP_S = 31.0
SESSION_GAP_MS = 35_000
PREVIOUS_CALLS_PER_PLAY = 20.4
"""The previous poller's calls per captured play (bench/RESULTS.md, Pollers, 30x run)."""


@dataclass
class Run:
    sim: RunningSimulator
    settings: Settings
    speed: float
    start_ms: int
    anchor: tuple[float, int] = (0.0, 0)
    samples: list[tuple[int, int]] = field(default_factory=list)
    """(virtual ms, calls of the account in the last 24 h) every virtual hour."""

    def virtual_ms(self, wall: float) -> int:
        return int(self.anchor[1] + (wall - self.anchor[0]) * self.speed * 1000)


@contextmanager
def world(args: argparse.Namespace, base: Settings, label: str) -> Iterator[Run]:
    config = SimulatorConfig(
        users=5,
        days=1,
        seed=5,
        speed=args.speed,
        rate_budget=600,
        start=START,
        daily_quota=args.quota,
    )
    database = f"bench_quota_{label}_{os.getpid()}"
    with run_simulator_in_thread(config) as sim:
        sim.control("clock", {"speed": 0})  # still while we link
        settings = base.model_copy(
            update={
                "spotify_api_base": sim.api_base,
                "spotify_accounts_base": sim.url,
                "spotify_extra_apps": [],
                "mongodb_uri": base.mongodb_uri.replace("/auxcord?", f"/{database}?"),
                "kafka_topic_prefix": f"quota{os.getpid()}{label}.",
                "poller_speed": args.speed,
                "poller_metrics_port": 0,
                "poller_id": label,
                "spotify_daily_budget": args.budget,
                # Spotify's 30 s limit runs on real time, in the simulator too: far faster than
                # real time, a day's calls come within seconds. The simulator allows 600.
                "poller_budget": 600,
            }
        )
        ensure_topics(settings)
        link_simulated_users(settings)
        try:
            yield Run(sim, settings, args.speed, sim.clock.now_ms())
        finally:
            with mongo_client(settings) as client:
                client.drop_database(database)


def binge(run: Run, user: str, until_ms: int, stop: threading.Event) -> None:
    """Force a 30 s track on ``user`` every ``BINGE_GAP_S`` virtual seconds in the binge hours."""
    while not stop.is_set():
        now = run.sim.clock.now_ms()
        if now >= until_ms:
            return
        if BINGE_HOUR * HOUR_MS <= now % DAY_MS < (BINGE_HOUR + 2) * HOUR_MS:
            run.sim.control(f"users/{user}/play")
            time.sleep(BINGE_GAP_S / run.speed)
        else:
            time.sleep(min(1.0, 60 / run.speed))


def sample_calls(run: Run, until_ms: int, stop: threading.Event) -> None:
    next_ms = run.sim.clock.now_ms()
    while not stop.is_set() and next_ms < until_ms:
        now = run.sim.clock.now_ms()
        if now >= next_ms:
            accounts = run.sim.control("stats", method="GET")["developer_accounts"]
            run.samples.append((now, sum(a["calls_24h"] for a in accounts.values())))
            next_ms = now + HOUR_MS
        time.sleep(min(0.5, 600 / run.speed))


def poll_for(run: Run, days: float, *, lock_at_ms: int | None = None) -> None:
    """Let ``auxcord poll`` run for ``days`` virtual days (binge and sampling alongside)."""
    until = run.start_ms + int(days * DAY_MS)
    poller = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", "poll"],
        env={**os.environ, **run.settings.as_environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    binger = run.sim.user_ids[0]
    threads = [
        threading.Thread(target=binge, args=(run, binger, until, stop)),
        threading.Thread(target=sample_calls, args=(run, until, stop)),
    ]
    run.sim.control("clock", {"speed": run.speed})
    run.anchor = (time.time(), run.sim.clock.now_ms())
    for thread in threads:
        thread.start()
    try:
        while (now := run.sim.clock.now_ms()) < until:
            if lock_at_ms is not None and now >= lock_at_ms:
                run.sim.control("faults", {"quota_lock": {"account": "auxcord-local", "hours": 14}})
                print(f"locked out at {datetime.fromtimestamp(now / 1000, UTC):%a %H:%M}")
                lock_at_ms = None
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        poller.terminate()
        poller.wait(timeout=60)
    # What is left is read by one more round, with the clock stopped.
    run.sim.control("clock", {"speed": 0})
    subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "poll", "--once"],
        env={**os.environ, **run.settings.as_environment()},
        capture_output=True,
        timeout=300,
        check=True,
    )


def track_key(row: dict[str, Any]) -> str:
    if row["track_id"]:
        return str(row["track_id"])
    return f"local:{row['artist_name'].casefold()}|{row['track_name'].casefold()}"


def match_plays(
    truth: list[dict[str, Any]], listens: list[ListenEvent]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Listed plays of ``truth`` with no event on Kafka, and those with more than one event id
    (the same play stored twice)."""
    ids: dict[tuple[str, str, int], set[str]] = {}
    for event in listens:
        second = int(event.played_at.timestamp())
        ids.setdefault((event.user_id, event.track_key, second), set()).add(event.event_id)
    missing, doubled = [], []
    for row in truth:
        if not row["listed"]:
            continue
        second = row["played_at_ms"] // 1000
        found: set[str] = set()
        for delta in (-1, 0, 1):
            found |= ids.get((row["user_id"], track_key(row), second + delta), set())
        if not found:
            missing.append(row)
        elif len(found) > 1:
            doubled.append(row)
    return missing, doubled


def live_feed(run: Run, truth: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Virtual seconds from each in-session track change until the feed shows that track or a
    later one of the session (infinite if it never does), and from each session's first play to
    the session's first record (see the module docstring). Times are the poller's observations,
    so the figure is the plan's, not Kafka's or this machine's latency times the speed-up."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for _, value in read_topic(run.settings, Topic.NOW_PLAYING):
        event = NowPlayingEvent.from_json(value)
        if event.state in ("started", "track_changed") and event.playing_type != "ad":
            at = run.virtual_ms(event.observed_at.timestamp())
            key = event.track_id or f"name:{event.track_name}"
            seen.setdefault(event.user_id, []).append((at, key))
    changes: list[float] = []
    starts: list[float] = []
    rows = sorted(
        (r for r in truth if r["started_at_ms"] >= run.anchor[1]),
        key=lambda r: (r["user_id"], r["started_at_ms"]),
    )
    sessions: list[list[dict[str, Any]]] = []
    for row in rows:
        last = sessions[-1][-1] if sessions else None
        if (
            last is not None
            and last["user_id"] == row["user_id"]
            and row["started_at_ms"] - last["played_at_ms"] <= SESSION_GAP_MS
        ):
            sessions[-1].append(row)
        else:
            sessions.append([row])
    for plays in sessions:
        events = seen.get(plays[0]["user_id"], [])
        begin, end = plays[0]["started_at_ms"], plays[-1]["played_at_ms"]
        first = min((at for at, _ in events if begin <= at <= end), default=None)
        starts.append(((end if first is None else first) - begin) / 1000)
        for index, row in enumerate(plays):
            if first is None or row["started_at_ms"] <= first:
                continue
            later = {other["track_id"] or f"name:{other['track_name']}" for other in plays[index:]}
            shown = [at for at, k in events if k in later and at >= row["started_at_ms"] - 50]
            changes.append(
                max(0, min(shown) - row["started_at_ms"]) / 1000 if shown else float("inf")
            )
    return sorted(changes), sorted(starts)


def pct(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(share * len(values)))]


def week(args: argparse.Namespace, base: Settings) -> None:
    with world(args, base, "week") as run:
        started = time.monotonic()
        poll_for(run, args.days)
        elapsed = time.monotonic() - started
        stats = run.sim.control("stats", method="GET")
        truth = [r for r in run.sim.ground_truth() if r["played_at_ms"] > run.start_ms]
        listens = [ListenEvent.from_json(v) for _, v in read_topic(run.settings, Topic.LISTENS)]
        missing, doubled = match_plays(truth, listens)
        changes, starts = live_feed(run, truth)
        gaps = mongo_database(run.settings)[Collection.GAPS].count_documents({})
    calls = stats["currently-playing"] + stats["recently-played"] + stats.get("token", 0)
    users, days = 5, args.days
    per_user_day = calls / users / days
    plays = sum(1 for r in truth if r["listed"])
    binger_plays = sum(1 for r in truth if r["listed"] and r["user_id"] == run.sim.user_ids[0])
    # Naive: currently-playing every 30 s, recently-played every 20 min, a token an hour.
    naive = 86_400 / 30 + 72 + 24
    previous = PREVIOUS_CALLS_PER_PLAY * plays / users / days
    windows = [calls_24h for at, calls_24h in run.samples if at - run.start_ms >= DAY_MS]
    print(
        f"{days:g} virtual days at {args.speed:g}x ({elapsed:.0f} s), 5 users on one app, "
        f"quota {args.quota}, budget {args.budget}\n"
        f"  calls per rolling 24 h (every virtual hour after the first day): "
        f"max {max(windows, default=0)}, mean {sum(windows) / max(1, len(windows)):.0f}; "
        f"QUOTA_EXCEEDED {stats.get('refused', {}).get('quota_exceeded', 0)}, "
        f"30 s 429s {stats.get('429', 0)}\n"
        f"  calls: {stats['currently-playing']} currently-playing, "
        f"{stats['recently-played']} recently-played, {stats.get('token', 0)} token requests "
        f"= {per_user_day:.1f} per user per day "
        f"(naive {naive:.0f}: {per_user_day / naive:.3f}x; the previous poller at "
        f"{PREVIOUS_CALLS_PER_PLAY} calls per play, {previous:.0f}: "
        f"{per_user_day / previous:.2f}x)\n"
        f"  plays: {plays} ({binger_plays} by the binger), missed {len(missing)}, "
        f"doubled {len(doubled)}, gaps recorded {gaps}\n"
        f"  live feed: track changes in session n={len(changes)} p50 {pct(changes, 0.5):.1f} s "
        f"p95 {pct(changes, 0.95):.1f} s; session starts n={len(starts)} "
        f"p50 {pct(starts, 0.5) / 60:.1f} min p95 {pct(starts, 0.95) / 60:.1f} min"
    )
    others = [r for r in truth if r["user_id"] != run.sim.user_ids[0]]
    other_changes, _ = live_feed(run, others)
    print(
        f"  without the binger: track changes n={len(other_changes)} "
        f"p50 {pct(other_changes, 0.5):.1f} s p95 {pct(other_changes, 0.95):.1f} s"
    )


def lockout(args: argparse.Namespace, base: Settings) -> None:
    with world(args, base, "lockout") as run:
        binger = run.sim.user_ids[0]
        lock_at = run.start_ms + DAY_MS + BINGE_HOUR * HOUR_MS - HOUR_MS // 2
        poll_for(run, 2, lock_at_ms=lock_at)
        stats = run.sim.control("stats", method="GET")
        truth = [r for r in run.sim.ground_truth() if r["played_at_ms"] > run.start_ms]
        database = mongo_database(run.settings)
        gaps = list(database[Collection.GAPS].find())
        polled = [ListenEvent.from_json(v) for _, v in read_topic(run.settings, Topic.LISTENS)]
        lost, _ = match_plays(truth, polled)
        spans = [
            (g["user_id"], g["start"].timestamp() * 1000, g["end"].timestamp() * 1000, g["cause"])
            for g in gaps
        ]
        outside = [
            r
            for r in lost
            if not any(u == r["user_id"] and a < r["played_at_ms"] < b for u, a, b, _ in spans)
        ]
        empty = [
            s
            for s in spans
            if not any(r["user_id"] == s[0] and s[1] < r["played_at_ms"] < s[2] for r in lost)
        ]
        print(
            f"forced lockout of 14 virtual hours at {args.speed:g}x: "
            f"{stats.get('refused', {}).get('quota_exceeded', 0)} calls refused; "
            f"{len(lost)} plays lost, {len(outside)} outside a recorded gap; "
            f"{len(gaps)} gaps ({', '.join(sorted({s[3] for s in spans}))}), "
            f"{len(empty)} with nothing lost"
        )
        for user, begin, end, cause in spans:
            print(
                f"  gap {user}: {datetime.fromtimestamp(begin / 1000, UTC):%a %H:%M:%S} to "
                f"{datetime.fromtimestamp(end / 1000, UTC):%a %H:%M:%S} ({cause})"
            )
        until = datetime.fromtimestamp(run.sim.clock.now_ms() / 1000, UTC)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "my_spotify_data.zip"
            write_extended_zip(run.sim.world, binger, until, path)
            report = import_history(run.settings, path, binger)
        listens = [ListenEvent.from_json(v) for _, v in read_topic(run.settings, Topic.LISTENS)]
        mine = [r for r in run.sim.ground_truth({binger}) if r["listed"]]
        missing, doubled = match_plays(mine, listens)
        repaired = database[Collection.GAPS].count_documents({"repaired_at": {"$ne": None}})
        print(
            f"  import of {binger}'s export: {report.accepted} plays read, {report.published} "
            f"published; all {len(mine)} of their plays: {len(missing)} missing, "
            f"{len(doubled)} doubled; gaps marked repaired by the import: {repaired}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--speed", type=float, default=1000.0)
    parser.add_argument("--quota", type=int, default=1_000)
    parser.add_argument("--budget", type=int, default=750, help="5 users x 150 calls a day")
    parser.add_argument("--lockout", action="store_true")
    args = parser.parse_args()
    (lockout if args.lockout else week)(args, get_settings())


if __name__ == "__main__":
    main()
