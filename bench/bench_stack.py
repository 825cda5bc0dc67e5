"""How fast ``auxcord stack up`` gets to all-ready, cold and warm, and what the idle stack costs.

Cold: a new data dir (MongoDB and GCS create their stores). Warm: the same data dir again after
``down``. Idle RSS: the resident memory of every process of the stack, 5 s after ``up``.
Targets (issue 2): warm ≤ 5 s, idle RSS ≤ 600 MB.

    .venv/bin/python bench/bench_stack.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from devtools.stack import LocalStack, settings_on_free_ports

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def timed_up(stack: LocalStack) -> float:
    """Seconds ``stack.up()`` takes to all-ready."""
    started = time.perf_counter()
    stack.up()
    return time.perf_counter() - started


def group_usage(pgids: list[int]) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of every process whose process group is in ``pgids``:
    a server and whatever it forked (Airflow's workers, tasks and their Spark drivers)."""
    rss_kb, ticks = 0, 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) not in pgids:
                continue
            ticks += int(stat[11]) + int(stat[12])  # utime + stime
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return rss_kb / 1024, ticks / CLOCK_TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    cold, warm, rss = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            stack = LocalStack(settings_on_free_ports(Path(tmp)), airflow=False)
            try:
                cold.append(timed_up(stack))
                time.sleep(5)
                rss.append(group_usage(list(stack.pids()))[0])
                stack.down()
                warm.append(timed_up(stack))
            finally:
                stack.down()

    print(f"stack up, cold (new data dir): median {statistics.median(cold):.2f} s")
    print(f"stack up, warm (same data dir): median {statistics.median(warm):.2f} s  (target ≤ 5 s)")
    print(
        f"idle RSS of the whole stack:    median {statistics.median(rss):.0f} MB  (target ≤ 600 MB)"
    )


if __name__ == "__main__":
    main()
