"""History import: 100,000 plays from an Extended Streaming History zip to visible in MongoDB
and GCS, with the affected days re-aggregated.

One simulated user's export (about fifteen years of plays of 30 s or more, plus the short,
private-session and empty rows an export has) is imported twice, each time into fresh topics,
bucket, database and checkpoint:

1. ``auxcord import ZIP --user U --no-aggregate``: the Python publisher alone (read, validate,
   publish to Kafka). Its peak RSS is the import process's.
2. ``auxcord import ZIP --user U``: the whole command, which also runs the streaming job
   (available-now) and the aggregation in the same process, on Spark. Spark's JVM is a child
   process; its RSS is reported beside the Python process's.

Targets (issue 8): ≤ 60 s end to end; peak RSS of the import process ≤ 500 MB.
Needs the local stack: ``auxcord stack up`` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_import.py [--plays 100000]
"""

from __future__ import annotations

import argparse
import os
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


def run_import(settings: Settings, zip_path: Path, user_id: str, *extra: str) -> dict[str, float]:
    command = [sys.executable, "-c", "from cli.main import main; main()", "import"]
    began = time.perf_counter()
    process = subprocess.Popen(
        [*command, str(zip_path), "--user", user_id, *extra],
        env={**os.environ, **settings.as_environment()},
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
    return {"seconds": elapsed, "own_mb": sampler.own / 2**20, "tree_mb": sampler.tree / 2**20}


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
    parser.add_argument("--plays", type=int, default=100_000)
    args = parser.parse_args()
    base = get_settings()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        zip_path = workdir / "my_spotify_data.zip"
        began = time.perf_counter()
        user_id, timezone, rows = make_export(args.plays, zip_path)
        size_mb = zip_path.stat().st_size / 2**20
        print(
            f"export: {rows:,} rows, {args.plays:,} plays of 30 s+, {size_mb:.1f} MB zip, "
            f"made in {time.perf_counter() - began:.1f} s"
        )
        tag = f"{os.getpid()}"
        figures = {}
        for name, extra in (("publish", ("--no-aggregate",)), ("full", ())):
            settings = bench_settings(base, f"{tag}{name}", workdir)
            with mongo_client(settings) as client:
                client[settings.mongodb_database][Collection.USERS].insert_one(
                    {"_id": user_id, "display_name": "Bench", "timezone": timezone}
                )
            figures[name] = run_import(settings, zip_path, user_id, *extra)
            if name == "full":
                listens, parquet_rows, days = visible(settings, user_id)
                figures[name].update(listens=listens, parquet=parquet_rows, days=days)
    publish, full = figures["publish"], figures["full"]
    print(
        f"publish only (--no-aggregate): {publish['seconds']:.1f} s, "
        f"{args.plays / publish['seconds']:,.0f} plays/s, peak RSS {publish['own_mb']:.0f} MB"
    )
    print(
        f"full import (publish + stream + aggregate): {full['seconds']:.1f} s; "
        f"peak RSS: Python process {full['own_mb']:.0f} MB, with Spark's JVM and workers "
        f"{full['tree_mb']:.0f} MB"
    )
    print(
        f"visible: {full['listens']:,.0f} listens in MongoDB, {full['parquet']:,.0f} rows in GCS "
        f"Parquet, {full['days']:,.0f} user days aggregated"
    )
    ok = full["listens"] == args.plays == full["parquet"]
    print(f"every play once in MongoDB and GCS: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
