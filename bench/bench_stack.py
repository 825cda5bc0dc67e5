"""How fast ``auxcord stack up`` gets to all-ready, cold and warm, and what the idle stack costs.

Cold: a new data dir (MongoDB and GCS create their stores). Warm: the same data dir again after
``down``. Idle RSS: the resident memory of every process of the stack, 5 s after ``up``.
Targets (issue 2): warm ≤ 5 s, idle RSS ≤ 600 MB.

    .venv/bin/python bench/bench_stack.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from devtools.stack import LocalStack, settings_on_free_ports


def _timed_up(stack: LocalStack) -> float:
    started = time.perf_counter()
    stack.up()
    return time.perf_counter() - started


def _group_rss_mb(pids: list[int]) -> float:
    """Resident memory of every process whose process group is one of ``pids``."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) not in pids:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    cold, warm, rss = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            stack = LocalStack(settings_on_free_ports(Path(tmp)), airflow=False)
            try:
                cold.append(_timed_up(stack))
                time.sleep(5)
                rss.append(_group_rss_mb(list(stack.pids())))
                stack.down()
                warm.append(_timed_up(stack))
            finally:
                stack.down()

    print(f"stack up, cold (new data dir): median {statistics.median(cold):.2f} s")
    print(f"stack up, warm (same data dir): median {statistics.median(warm):.2f} s  (target ≤ 5 s)")
    print(
        f"idle RSS of the whole stack:    median {statistics.median(rss):.0f} MB  (target ≤ 600 MB)"
    )


if __name__ == "__main__":
    main()
