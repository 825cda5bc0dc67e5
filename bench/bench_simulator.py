"""The Spotify simulator must never be the bottleneck: requests/s, and history generation time.

Targets (issue 3): at least 2,000 API requests/s on loopback, and a year of history for 50
users generated in under 10 s. Load comes from wrk in a second process (`apt-get install wrk`);
the simulator runs as `auxcord simulate` in its own process.

    .venv/bin/python bench/bench_simulator.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import requests

from devtools.simulator.model import World, WorldConfig
from devtools.stack import free_port


def generation_seconds(users: int, days: int) -> float:
    started = time.perf_counter()
    World(WorldConfig(users=users, seed=1, history_days=days, start=datetime.now(UTC)))
    return time.perf_counter() - started


def _access_token(base: str, user_id: str) -> str:
    """An access token for ``user_id``, through the same PKCE flow the tests use."""
    sys.path.insert(0, ".")
    from tests.simulator.helpers import tokens_for

    class Accounts:
        url = base

    return tokens_for(Accounts(), user_id)["access_token"]


def requests_per_second(seconds: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cli.main import main; main()",
            "simulate",
            "--port",
            str(port),
            "--users",
            "20",
            "--days",
            "7",
            "--speed",
            "1",
            "--rate-budget",
            "100000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                users = requests.get(f"{base}/_sim/users", timeout=1).json()
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        token = _access_token(base, users[0]["user_id"])
        results = {}
        for name, path in (
            ("currently-playing", "/v1/me/player/currently-playing"),
            ("recently-played limit=50", "/v1/me/player/recently-played?limit=50"),
            ("me", "/v1/me"),
        ):
            out = subprocess.run(
                [
                    "wrk",
                    "-t2",
                    "-c32",
                    f"-d{seconds}s",
                    "-H",
                    f"Authorization: Bearer {token}",
                    f"{base}{path}",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            match = re.search(r"Requests/sec:\s+([\d.]+)", out)
            errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            assert match, out
            results[name] = float(match.group(1))
            if errors:
                print(f"  warning: {errors.group(1)} non-2xx responses on {name}")
        return results
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    print(f"history for 50 users x 365 days: {generation_seconds(50, 365):.2f} s (target < 10 s)")
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk to measure requests/s")
        return
    for name, rate in requests_per_second(args.seconds).items():
        print(f"{name:>26}: {rate:,.0f} requests/s (target >= 2,000)")


if __name__ == "__main__":
    main()
