"""History import: plays from an Extended Streaming History zip to visible in MongoDB and GCS,
with the importing user's days (and their groups') re-aggregated, end to end.

For each ``--plays`` size, one simulated user's export (the last N plays of 30 s or more of
about fifteen years, plus the short, private-session and empty rows an export has) is imported
with ``auxcord import ZIP --user U`` into fresh topics, bucket, database and checkpoint. The
command prints each step's time, which the benchmark reports: read and published (Spark's JVM
starts meanwhile), stored (the stream's available-now run), aggregated (the user's days and
their groups'). Peak RSS is the Python process's (Spark's JVM is a child, reported beside it).

``--others N`` first fills the database with N other users' year of plays, four of them in a
group with the importing user and their days aggregated: the import's time should not grow
with them (it reads the group's stored days, and nothing of the rest).

Targets (issue 21): 100,000 plays ≤ 60 s end to end, Spark start-up included; a 5,000-play
export ≤ 20 s; peak RSS of the Python process ≤ 500 MB. Needs the local stack: ``auxcord stack
up`` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_import.py --plays 5000 100000 [--others 100]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from auxcord.clients import ensure_bucket, ensure_topics, gcs_client, mongo_client
from auxcord.names import RAW_LISTENS_PREFIX, Collection
from auxcord.settings import Settings, get_settings
from devtools.simulator.export import write_extended_zip
from devtools.simulator.model import World, WorldConfig


def bench_settings(base: Settings, tag: str, workdir: Path) -> Settings:
    database = f"auxcord_bench_import_{tag}"
    uri = base.mongodb_uri.replace(f"/{base.mongodb_database}?", f"/{database}?")
    settings = base.model_copy(
        update={
            "mongodb_uri": uri,
            "kafka_topic_prefix": f"benchimport{tag}.",
            "gcs_bucket": f"auxcord-bench-import-{tag}",
            "stream_checkpoint_dir": str(workdir / f"checkpoint-{tag}"),
        }
    )
    ensure_topics(settings)
    ensure_bucket(settings)
    with mongo_client(settings) as client:
        client.drop_database(database)
    return settings


def make_export(plays: int, path: Path) -> tuple[str, str, int]:
    """A zip of the last ``plays`` plays (30 s or more) of one simulated user."""
    until = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    world = World(WorldConfig(users=1, seed=82, start=until, history_days=7_000))
    user = world.users[0]
    truth = world.ground_truth(int(until.timestamp() * 1000), {user.user_id})
    counted = [row for row in truth if row["ms_played"] >= 30_000]
    if len(counted) < plays:
        raise SystemExit(f"the simulated user has only {len(counted)} plays")
    since = datetime.fromtimestamp(counted[-plays]["played_at_ms"] / 1000, UTC)
    summary = write_extended_zip(world, user.user_id, until, path, since=since)
    return user.user_id, user.timezone, summary.rows


class TreeSampler:
    """Peak RSS of a process, and of its descendants (Spark's JVM, Python workers)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.own = self.tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                own = self.process.memory_info().rss
                children = sum(c.memory_info().rss for c in self.process.children(recursive=True))
            except psutil.Error:
                continue
            self.own, self.tree = max(self.own, own), max(self.tree, own + children)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


STEPS = {
    "published": r"read and published in ([0-9.]+) s",
    "stored": r"plays (?:already stored|stored|streamed) by [^\n]* in ([0-9.]+) s",
    "aggregated": r"Re-aggregated .* in ([0-9.]+) s",
}


def run_import(settings: Settings, zip_path: Path, user_id: str) -> dict[str, float]:
    command = [sys.executable, "-c", "from cli.main import main; main()", "import"]
    began = time.perf_counter()
    process = subprocess.Popen(
        [*command, str(zip_path), "--user", user_id],
        env={**os.environ, **settings.as_environment(), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = TreeSampler(process.pid)
    output, _ = process.communicate()
    elapsed = time.perf_counter() - began
    sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"auxcord import failed:\n{output[-3000:]}")
    figures = {"seconds": elapsed, "own_mb": sampler.own / 2**20, "tree_mb": sampler.tree / 2**20}
    for step, pattern in STEPS.items():
        found = re.search(pattern, output)
        figures[step] = float(found.group(1)) if found else float("nan")
    return figures


def seed_others(settings: Settings, user_id: str, others: int, until: datetime) -> None:
    """``others`` users with a year of plays each (ten a day) before ``until``; the first four
    share a group with ``user_id``, and their days are aggregated (the import's group rebuild
    reads them); the rest are strangers whose data the import must not touch."""
    from analytics.aggregate import aggregate_days
    from auxcord.events import ListenEvent

    rng = random.Random(21)
    tracks = [(f"bench{n:04d}", f"Track {n}", f"Artist {n % 60}") for n in range(400)]
    names = [f"other{n:03d}" for n in range(others)]
    first = (until - timedelta(days=365)).date()
    with mongo_client(settings) as client:
        database = client[settings.mongodb_database]
        database[Collection.USERS].insert_many(
            [{"_id": name, "display_name": name, "timezone": "UTC"} for name in names]
        )
        for name in names:
            documents = []
            for day in range(365):
                start = datetime.combine(first, datetime.min.time(), UTC) + timedelta(days=day)
                for play in range(10):
                    track_id, track, artist = rng.choice(tracks)
                    event = ListenEvent.from_dict(
                        {
                            "user_id": name,
                            "track_id": track_id,
                            "track_name": track,
                            "artist_name": artist,
                            "album_name": artist,
                            "album_image_url": None,
                            "duration_ms": 200_000,
                            "ms_played": 200_000,
                            "source": "poll",
                            "played_at": start + timedelta(hours=8, minutes=4 * play),
                        }
                    )
                    documents.append(event.to_document())
            database[Collection.LISTENS].insert_many(documents, ordered=False)
        database[Collection.GROUPS].insert_one(
            {"_id": "bench", "name": "Bench", "members": names[:4], "owner": names[0]}
        )
    aggregate_days(settings, first, until.date(), group="bench")
    with mongo_client(settings) as client:
        client[settings.mongodb_database][Collection.GROUPS].update_one(
            {"_id": "bench"}, {"$push": {"members": user_id}}
        )


def visible(settings: Settings, user_id: str) -> tuple[int, int, int]:
    """Listens in MongoDB, rows in GCS Parquet, and user days aggregated."""
    import io

    import pyarrow.parquet as pq

    with mongo_client(settings) as client:
        database = client[settings.mongodb_database]
        listens = database[Collection.LISTENS].count_documents({"user_id": user_id})
        days = database[Collection.USER_DAILY].count_documents({"user_id": user_id})
    rows = 0
    for blob in gcs_client(settings).list_blobs(settings.gcs_bucket, prefix=RAW_LISTENS_PREFIX):
        rows += pq.read_metadata(io.BytesIO(blob.download_as_bytes())).num_rows
    return listens, rows, days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plays", type=int, nargs="+", default=[100_000])
    parser.add_argument("--others", type=int, default=0, help="other users' year to hold")
    args = parser.parse_args()
    base = get_settings()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for plays in args.plays:
            zip_path = workdir / f"my_spotify_data_{plays}.zip"
            user_id, timezone, export_rows = make_export(plays, zip_path)
            size_mb = zip_path.stat().st_size / 2**20
            print(f"export: {export_rows:,} rows, {plays:,} plays of 30 s+, {size_mb:.1f} MB zip")
            settings = bench_settings(base, f"{os.getpid()}x{plays}", workdir)
            with mongo_client(settings) as client:
                client[settings.mongodb_database][Collection.USERS].insert_one(
                    {"_id": user_id, "display_name": "Bench", "timezone": timezone}
                )
            if args.others:
                began = time.perf_counter()
                seed_others(settings, user_id, args.others, datetime.now(UTC))
                seconds = time.perf_counter() - began
                print(f"seeded {args.others} other users' year in {seconds:.0f} s")
            figures = run_import(settings, zip_path, user_id)
            listens, parquet_rows, days = visible(settings, user_id)
            ok = listens == plays == parquet_rows
            print(
                f"{plays:,} plays: {figures['seconds']:.1f} s end to end (read and published "
                f"{figures['published']:.1f} s, stored {figures['stored']:.1f} s, aggregated "
                f"{figures['aggregated']:.1f} s); peak RSS {figures['own_mb']:.0f} MB Python, "
                f"{figures['tree_mb']:.0f} MB with Spark; {listens:,} listens, "
                f"{parquet_rows:,} Parquet rows, {days:,} user days; every play once: "
                f"{'yes' if ok else 'NO'}"
            )
            rows.append((plays, figures, days))
    print(
        "\n| plays | end to end | read and published | stored | aggregated | user days "
        "| peak RSS Python / with Spark |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for plays, figures, days in rows:
        print(
            f"| {plays:,} | {figures['seconds']:.1f} s | {figures['published']:.1f} s | "
            f"{figures['stored']:.1f} s | {figures['aggregated']:.1f} s | {days:,} | "
            f"{figures['own_mb']:.0f} / {figures['tree_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
