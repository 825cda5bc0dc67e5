"""Pollers: Spotify calls per captured play, adaptive against naive fixed-interval polling.

Both pollers run against the same seeded simulated world (same users, same plays), one after
the other, each with its own Kafka topics. Naive polling reads currently-playing every 30 s and
recently-played every 20 minutes, which is as fresh on the live feed as the adaptive poller's
cap and just safe for the 50-play window. Each run then reads what is left (``--once`` style)
and checks that no play of the ground truth is missing.

Target (issue 4): adaptive calls per play at most half of naive; zero plays missed. Also
printed: the CPU the process (poller and simulator together) used per real second.

Needs the local stack: `auxcord stack up` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_producers.py [--users 20] [--seconds 40] [--speed 120]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

from auxcord.clients import ensure_topics, kafka_consumer
from auxcord.events import ListenEvent
from auxcord.linking import link_simulated_users
from auxcord.names import Topic
from auxcord.settings import Settings, get_settings
from auxcord.simulator import SimulatorConfig, run_simulator_in_thread
from auxcord.stack import free_port
from auxcord.webserver import serve_in_thread
from producers.poller import Poller, PollerConfig


def _listens(settings: Settings) -> set[str]:
    from kafka import TopicPartition

    consumer = kafka_consumer(settings)
    name = settings.topic(Topic.LISTENS)
    partitions = [TopicPartition(name, p) for p in range(Topic.LISTENS.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ids: set[str] = set()
    quiet = 0
    while quiet < 3:
        batch = consumer.poll(timeout_ms=1_000)
        quiet = 0 if batch else quiet + 1
        for records in batch.values():
            ids.update(ListenEvent.from_json(r.value).event_id for r in records)
    consumer.close()
    return ids


def run(adaptive: bool, args: argparse.Namespace, base: Settings, label: str) -> dict[str, float]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    config = SimulatorConfig(
        users=args.users, days=1, seed=5, speed=args.speed, rate_budget=1_000_000, start=start
    )
    with run_simulator_in_thread(config) as sim, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        database = f"bench_producers_{label}_{os.getpid()}"
        settings = base.model_copy(update={
            "spotify_api_base": sim.api_base, "spotify_accounts_base": sim.url,
            "spotify_redirect_uri": f"http://127.0.0.1:{port}/auth/callback",
            "spotify_extra_apps": [], "data_dir": base.data_dir,
            "mongodb_uri": base.mongodb_uri.replace("/auxcord?", f"/{database}?"),
            "kafka_topic_prefix": f"bench{os.getpid()}{label}.",
            "poller_budget": 1_000_000, "poller_speed": args.speed,
        })  # fmt: skip
        del tmp
        ensure_topics(settings)
        from auxcord.settings import SpotifyApp

        settings = settings.model_copy(
            update={
                "spotify_extra_apps": [
                    SpotifyApp(client_id=f"app-{n}") for n in range(args.users // 5 + 1)
                ]
            }
        )
        with serve_in_thread(settings, "127.0.0.1", port):
            link_simulated_users(settings)
        start_ms = sim.clock.now_ms()
        poller = Poller(
            settings,
            PollerConfig(speed=args.speed, adaptive=adaptive, budget_per_app=1_000_000),
            owner=label,
        )
        sim.simulator.calls.clear()
        stop = threading.Event()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        thread = threading.Thread(target=poller.run, args=(stop,))
        thread.start()
        time.sleep(args.seconds)
        stop.set()
        thread.join()
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        calls = sim.simulator.calls["currently-playing"] + sim.simulator.calls["recently-played"]
        sim.control("clock", {"speed": 0})
        poller.run(threading.Event(), once=True)
        truth = [r for r in sim.ground_truth() if r["listed"] and r["played_at_ms"] > start_ms]
        expected = {
            ListenEvent.from_dict({
                "user_id": r["user_id"], "track_id": r["track_id"], "track_name": r["track_name"],
                "artist_name": r["artist_name"], "duration_ms": r["duration_ms"],
                "played_at": r["played_at"], "source": "poll", "is_local": r["is_local"],
            }).event_id
            for r in truth
        }  # fmt: skip
        got = _listens(settings)
        from auxcord.clients import mongo_client

        with mongo_client(settings) as client:
            client.drop_database(database)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (
            cpu_before.ru_utime + cpu_before.ru_stime
        )
        return {
            "calls": calls,
            "plays": len(expected),
            "missed": len(expected - got),
            "cpu_per_s": cpu / args.seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--speed", type=float, default=120.0)
    args = parser.parse_args()
    base = get_settings()
    results = {name: run(name == "adaptive", args, base, name) for name in ("adaptive", "naive")}
    for name, r in results.items():
        print(
            f"{name:>8}: {r['calls']:.0f} calls for {r['plays']:.0f} plays = "
            f"{r['calls'] / max(1, r['plays']):.2f} calls/play, {r['missed']:.0f} missed; "
            f"CPU {r['cpu_per_s']:.2f} core (poller and simulator share the process)"
        )
    ratio = (results["adaptive"]["calls"] / max(1, results["adaptive"]["plays"])) / (
        results["naive"]["calls"] / max(1, results["naive"]["plays"])
    )
    print(f"adaptive / naive calls per play: {ratio:.2f}x (target <= 0.5x, zero missed)")


if __name__ == "__main__":
    main()
