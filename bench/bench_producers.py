"""Pollers: Spotify calls per captured play, now-playing freshness, and 1,000 users' CPU.

The simulator runs as ``auxcord simulate`` in a process of its own, so it neither shares the
poller's interpreter lock nor counts in the poller's CPU.

``compare`` (the default): the adaptive poller and the naive one (currently-playing every 30 s,
recently-played every 20 minutes: as fresh on the live feed as the adaptive poller is between
predicted track ends, and just safe for the 50-play window) run one after the other against
the same seeded world from the same fixed virtual start. Each then reads what is left and is
checked against the simulator's ground truth. Target (issue 4): adaptive calls per play at most
half of naive, zero plays missed.

``scale``: ``--users`` users (1,000 by default) across enough Spotify apps (five users each)
that every app's rate budget holds, polled by one ``auxcord poll`` process, whose CPU alone is
measured after a warm-up. Target: 1,000 users on one process under half a core.

Both print now-playing freshness: from a track starting in the simulator to its now-playing
event on Kafka (the record's timestamp), in Spotify seconds. Target: p95 within the poll
interval + 1 s. Track starts inside a session (the previous play ended moments before) are
seen within ``track_cap_s`` at worst, and a session's first track within the idle interval.

Needs the local stack: `auxcord stack up` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_producers.py compare [--users 20] [--seconds 40] [--speed 120]
    .venv/bin/python bench/bench_producers.py scale [--users 1000] [--seconds 120] [--speed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from auxcord.accounts import AccountStore
from auxcord.clients import ensure_topics, kafka_consumer, mongo_client, mongo_database
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.names import Topic
from auxcord.settings import Settings, SpotifyApp, get_settings
from auxcord.spotify import SCOPES
from auxcord.tokens import TokenCipher
from devtools.stack import free_port
from producers.poller import Poller, PollerConfig

USERS_PER_APP = 5
SESSION_GAP_S = 35.0
"""A track starting within this long of the previous play's end continues a session (gaps
between tracks are a few seconds, plus 30 s when an ad plays between them)."""


@dataclass
class SimProcess:
    """``auxcord simulate`` in its own process, steered over its ``/_sim`` endpoints."""

    url: str
    speed: float
    process: subprocess.Popen[bytes]

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_sim/{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
        if path.startswith("ground-truth"):
            return [json.loads(line) for line in text.splitlines() if line]
        return json.loads(text)

    def wall_time_of(self) -> tuple[float, int]:
        """A (wall time, virtual ms) pair read together, to turn virtual times into real ones."""
        before = time.time()
        now_ms = int(self.call("clock")["now_ms"])
        return (before + time.time()) / 2, now_ms


@contextmanager
def simulator(users: int, speed: float, start: datetime | None) -> Iterator[SimProcess]:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from cli.main import main; main()",
        "simulate",
        "--users",
        str(users),
        "--days",
        "1",
        "--seed",
        "5",
        "--speed",
        str(speed),
        "--port",
        str(port),
        "--rate-budget",
        "600",
    ]
    if start is not None:
        command += ["--start", start.isoformat()]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    sim = SimProcess(f"http://127.0.0.1:{port}", speed, process)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                sim.call("clock")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.2)
        yield sim
    finally:
        process.terminate()
        process.wait(timeout=30)


def world_settings(base: Settings, sim: SimProcess, label: str, users: int) -> Settings:
    """``base`` pointed at ``sim``, with a database, topics and apps of this run's own."""
    database = f"bench_producers_{label}_{os.getpid()}"
    apps = [SpotifyApp(client_id=f"app-{n}") for n in range(users // USERS_PER_APP)]
    settings = base.model_copy(
        update={
            "spotify_api_base": f"{sim.url}/v1",
            "spotify_accounts_base": sim.url,
            "spotify_redirect_uri": "http://127.0.0.1:8000/auth/callback",
            "spotify_extra_apps": apps,
            "mongodb_uri": base.mongodb_uri.replace("/auxcord?", f"/{database}?"),
            "kafka_topic_prefix": f"bench{os.getpid()}{label}.",
            "poller_speed": sim.speed,
            "poller_metrics_port": 0,
            "poller_id": label,
        }
    )
    ensure_topics(settings)
    return settings


def link_all(settings: Settings, sim: SimProcess) -> None:
    """Link every simulated user, five to an app, with tokens from the simulator's OAuth flow.

    Straight to the accounts store rather than through the web app's sign-in, whose per-address
    limit (60 a minute) would make linking a thousand users take half an hour.
    """
    store = AccountStore(mongo_database(settings), TokenCipher(settings.secret_key_value()))
    apps = settings.spotify_apps
    redirect = settings.spotify_redirect_uri
    with httpx.Client(base_url=sim.url, timeout=30) as http:
        for n, user in enumerate(http.get("/_sim/users").json()):
            client_id = apps[n // USERS_PER_APP].client_id
            consent = http.get(
                "/authorize",
                params={
                    "client_id": client_id,
                    "redirect_uri": redirect,
                    "response_type": "code",
                    "scope": " ".join(SCOPES),
                    "sim_user": user["user_id"],
                },
            )
            code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
            tokens = http.post(
                "/api/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect,
                    "client_id": client_id,
                    "client_secret": "bench",
                },
            )
            tokens.raise_for_status()
            store.link(
                user_id=user["user_id"],
                display_name=user["display_name"],
                country=user["country"],
                timezone=user["timezone"],
                client_id=client_id,
                token_info=tokens.json(),
            )


def drop_database(settings: Settings) -> None:
    with mongo_client(settings) as client:
        client.drop_database(settings.mongodb_database)


def read_topic(settings: Settings, topic: Topic) -> list[tuple[int, bytes]]:
    """Every record on ``topic`` as (Kafka timestamp in ms, value)."""
    from kafka import TopicPartition

    consumer = kafka_consumer(settings)
    name = settings.topic(topic)
    partitions = [TopicPartition(name, p) for p in range(topic.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[tuple[int, bytes]] = []
    quiet = 0
    while quiet < 3:
        batch = consumer.poll(timeout_ms=1_000)
        quiet = 0 if batch else quiet + 1
        for part in batch.values():
            records.extend((r.timestamp, r.value) for r in part)
    consumer.close()
    return records


def expected_plays(truth: list[dict[str, Any]], after_ms: int) -> set[str]:
    """The event ids of the listed plays that ended after ``after_ms``."""
    return {
        ListenEvent.from_dict(
            {
                "user_id": r["user_id"],
                "track_id": r["track_id"],
                "track_name": r["track_name"],
                "artist_name": r["artist_name"],
                "duration_ms": r["duration_ms"],
                "played_at": r["played_at"],
                "source": "poll",
                "is_local": r["is_local"],
            }
        ).event_id
        for r in truth
        if r["listed"] and r["played_at_ms"] > after_ms
    }


def missed_plays(settings: Settings, sim: SimProcess, after_ms: int) -> tuple[int, int]:
    """Freeze time, let one ``--once`` round read what is left; (plays expected, missed)."""
    sim.call("clock", {"speed": 0})
    once = Poller(settings, PollerConfig(speed=sim.speed), owner=f"{settings.poller_id}-once")
    once.run(threading.Event(), once=True)
    expected = expected_plays(sim.call("ground-truth"), after_ms)
    got = {
        ListenEvent.from_json(value).event_id for _, value in read_topic(settings, Topic.LISTENS)
    }
    return len(expected), len(expected - got)


# Freshness


@dataclass(frozen=True)
class Freshness:
    in_session: list[float]
    session_starts: list[float]
    unseen: int
    """Track starts that no now-playing event announced (skipped before any read saw them)."""


def _item_key(track_id: str | None, track_name: str | None) -> str:
    return track_id or f"name:{track_name}"


def freshness(
    sim: SimProcess,
    truth: list[dict[str, Any]],
    records: list[tuple[int, bytes]],
    anchor: tuple[float, int],
    window_ms: tuple[int, int],
) -> Freshness:
    """Spotify seconds from each track start in ``window_ms`` (virtual) to its event on Kafka.

    An event announces a play when it names the same item for the same user while that play
    ran; the Kafka timestamp says when the event was on Kafka, and ``anchor`` maps virtual
    times to wall-clock ones.
    """
    wall, virtual_ms = anchor

    def wall_of(ms: int) -> float:
        return wall + (ms - virtual_ms) / 1000 / sim.speed

    announced: dict[str, list[tuple[float, str]]] = {}
    for timestamp, value in records:
        event = NowPlayingEvent.from_json(value)
        if event.state in ("started", "track_changed") and event.playing_type != "ad":
            seen = timestamp / 1000 if timestamp > 0 else event.observed_at.timestamp()
            key = _item_key(event.track_id, event.track_name)
            announced.setdefault(event.user_id, []).append((seen, key))
    in_session: list[float] = []
    starts: list[float] = []
    unseen = 0
    previous_end: dict[str, int] = {}
    for row in sorted(truth, key=lambda r: (r["user_id"], r["started_at_ms"])):
        user, began, ended = row["user_id"], row["started_at_ms"], row["played_at_ms"]
        follows = began - previous_end.get(user, -(10**15)) <= SESSION_GAP_S * 1000
        previous_end[user] = ended
        if not window_ms[0] <= began <= window_ms[1]:
            continue
        key = _item_key(row["track_id"], row["track_name"])
        # Kafka's timestamps and the anchor come from one clock; allow for the anchor's error.
        early, late = wall_of(began) - 0.05, wall_of(ended) + 1.0
        times = [t for t, k in announced.get(user, []) if k == key and early <= t <= late]
        if not times:
            unseen += 1
            continue
        delay = max(0.0, (min(times) - wall_of(began)) * sim.speed)
        (in_session if follows else starts).append(delay)
    return Freshness(in_session, starts, unseen)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.999999) - 1))]


def describe_freshness(fresh: Freshness, config: PollerConfig) -> str:
    parts = []
    # The longest poll interval each kind of start can meet: naive polling has only one.
    in_session, idle = (
        (config.track_cap_s, config.idle_s) if config.adaptive else (config.active_s,) * 2
    )
    for name, values, bound in (
        ("in session", fresh.in_session, in_session),
        ("session start", fresh.session_starts, idle),
        ("all", fresh.in_session + fresh.session_starts, None),
    ):
        text = (
            f"{name}: n={len(values)} p50 {percentile(values, 0.5):.1f} s "
            f"p95 {percentile(values, 0.95):.1f} s max {max(values, default=float('nan')):.1f} s"
        )
        if bound is not None:
            within = sum(v <= bound + 1 for v in values)
            text += f" ({within}/{len(values)} within the {bound:g} s interval + 1 s)"
        parts.append(text)
    parts.append(f"{fresh.unseen} track starts never on the live feed (skipped unseen)")
    return "\n    ".join(parts)


# compare: adaptive against naive


def compare_run(adaptive: bool, args: argparse.Namespace, base: Settings) -> dict[str, Any]:
    label = "adaptive" if adaptive else "naive"
    start = datetime.fromisoformat(args.start)
    with simulator(args.users, args.speed, start) as sim:
        settings = world_settings(base, sim, label, args.users)
        # No daily budget here: this compares the schedules themselves (bench_quota.py runs
        # them against Spotify's daily quota).
        settings = settings.model_copy(
            update={"poller_budget": 1_000_000, "spotify_daily_budget": 10**9}
        )
        link_all(settings, sim)
        config = PollerConfig(
            speed=args.speed, adaptive=adaptive, app_budget_30s=1_000_000, daily_budget=10**9
        )
        poller = Poller(settings, config, owner=label)
        before = sim.call("stats")
        anchor = sim.wall_time_of()
        stop = threading.Event()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        thread = threading.Thread(target=poller.run, args=(stop,))
        thread.start()
        time.sleep(args.seconds)
        stop.set()
        thread.join()
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        after = sim.call("stats")
        end_ms = sim.wall_time_of()[1]
        calls = {
            endpoint: after.get(endpoint, 0) - before.get(endpoint, 0)
            for endpoint in ("currently-playing", "recently-played")
        }
        plays, missed = missed_plays(settings, sim, anchor[1])
        truth = sim.call("ground-truth")
        fresh = freshness(
            sim, truth, read_topic(settings, Topic.NOW_PLAYING), anchor, (anchor[1], end_ms)
        )
        drop_database(settings)
    cpu = sum((cpu_after.ru_utime, cpu_after.ru_stime)) - sum(
        (cpu_before.ru_utime, cpu_before.ru_stime)
    )
    virtual_s = (end_ms - anchor[1]) / 1000
    return {
        "calls": calls,
        "plays": plays,
        "missed": missed,
        "cpu_per_s": cpu / args.seconds,
        "fresh": fresh,
        "config": config,
        # What fixed-interval polling asks for in that virtual time: a check that the naive
        # poller kept its schedule (if it fell behind, its count understates naive polling).
        "scheduled": args.users * (virtual_s / config.active_s + virtual_s / config.naive_recent_s),
    }


def compare(args: argparse.Namespace, base: Settings) -> None:
    results = {name: compare_run(name == "adaptive", args, base) for name in ("adaptive", "naive")}
    per_play = {}
    for name, r in results.items():
        total = sum(r["calls"].values())
        per_play[name] = total / max(1, r["plays"])
        print(
            f"{name:>8}: {total} calls ({r['calls']['currently-playing']} currently-playing, "
            f"{r['calls']['recently-played']} recently-played) for {r['plays']} plays = "
            f"{per_play[name]:.2f} calls/play, {r['missed']} missed; "
            f"CPU {r['cpu_per_s']:.2f} core (poller only)"
        )
        print(f"    freshness (Spotify seconds): {describe_freshness(r['fresh'], r['config'])}")
    naive = results["naive"]
    print(
        f"naive made {sum(naive['calls'].values())} of the ~{naive['scheduled']:.0f} calls its "
        "fixed schedule asks for in that virtual time"
    )
    ratio = per_play["adaptive"] / per_play["naive"]
    print(f"adaptive / naive calls per play: {ratio:.2f}x (target <= 0.5x, zero missed)")


# scale: one poller process, many users


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_lateness(port: int) -> dict[float, float]:
    """The poller's round-lateness histogram: cumulative rounds per bucket bound (real s)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "auxcord_poll_round_lateness_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] = sample.value
    return buckets


def describe_lateness(before: dict[float, float], after: dict[float, float]) -> str:
    """Rounds in the window, the share started within 1 s of due, and the bucket of the median."""
    counts = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if not total:
        return "no rounds"
    median = next(bound for bound, count in counts.items() if count >= total / 2)
    return (
        f"{total:.0f} rounds, {counts.get(1.0, 0.0) / total:.1%} started within 1 s of due, "
        f"median at most {median:g} s"
    )


def scale(args: argparse.Namespace, base: Settings) -> None:
    with simulator(args.users, args.speed, None) as sim:
        metrics_port = free_port()
        settings = world_settings(base, sim, "scale", args.users).model_copy(
            update={"poller_metrics_port": metrics_port}
        )
        started = time.monotonic()
        link_all(settings, sim)
        print(f"linked {args.users} users in {time.monotonic() - started:.0f} s")
        anchor = sim.wall_time_of()
        poller = subprocess.Popen(
            [sys.executable, "-c", "from cli.main import main; main()", "poll"],
            env={**os.environ, **settings.as_environment()},
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(args.warmup)
            before, cpu_before = sim.call("stats"), process_cpu_seconds(poller.pid)
            late_before = round_lateness(metrics_port)
            window_start = sim.wall_time_of()[1]
            time.sleep(args.seconds)
            after, cpu_after = sim.call("stats"), process_cpu_seconds(poller.pid)
            late_after = round_lateness(metrics_port)
            end_ms = sim.wall_time_of()[1]
        finally:
            poller.terminate()
            poller.wait(timeout=60)
        calls = {
            key: after.get(key, 0) - before.get(key, 0)
            for key in ("currently-playing", "recently-played", "429")
        }
        plays, missed = missed_plays(settings, sim, anchor[1])
        truth = sim.call("ground-truth")
        fresh = freshness(
            sim, truth, read_topic(settings, Topic.NOW_PLAYING), anchor, (window_start, end_ms)
        )
        drop_database(settings)
    cpu = (cpu_after - cpu_before) / args.seconds
    config = PollerConfig(speed=args.speed)
    print(
        f"{args.users} users on {args.users // USERS_PER_APP} apps at {args.speed:g}x real time, "
        f"one `auxcord poll` process, {args.seconds:.0f} s after a {args.warmup:.0f} s warm-up:\n"
        f"    CPU {cpu:.3f} core; {calls['currently-playing']} currently-playing and "
        f"{calls['recently-played']} recently-played calls "
        f"({(calls['currently-playing'] + calls['recently-played']) / args.seconds:.1f}/s), "
        f"{calls['429']} answered 429\n"
        f"    rounds: {describe_lateness(late_before, late_after)}\n"
        f"    {plays} plays since the poller started, {missed} missed\n"
        f"    freshness (Spotify seconds): {describe_freshness(fresh, config)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("compare", "scale"), default="compare")
    parser.add_argument("--users", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--speed", type=float)
    parser.add_argument("--warmup", type=float, default=60.0, help="scale: seconds not measured")
    parser.add_argument(
        "--start",
        default="2026-11-20T18:00:00+00:00",
        help="compare: virtual start, fixed so that every run replays the same plays",
    )
    args = parser.parse_args()
    defaults = {"compare": (20, 40.0, 120.0), "scale": (1_000, 120.0, 1.0)}[args.mode]
    args.users = args.users or defaults[0]
    args.seconds = args.seconds or defaults[1]
    args.speed = args.speed or defaults[2]
    (compare if args.mode == "compare" else scale)(args, get_settings())


if __name__ == "__main__":
    main()
