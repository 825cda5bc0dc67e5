"""One batch job of a kind at a time per database, across processes: a lease in MongoDB.

Aggregations replace whole days of user and group documents, and a group's day is rebuilt from
its members' stored days read at the start of a run. Two runs side by side (the nightly DAG
and an upload's re-aggregation, two members' uploads) would each write group days from what
they read before the other wrote, and the last writer would drop the other's plays. Airflow's
own limits cover only its runs; the lease covers every caller of the job registry.

The lease expires unless renewed, so a killed process never blocks the next run for longer
than :data:`LEASE_TTL`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from auxcord.errors import AuxcordError
from auxcord.names import Collection

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(minutes=2)
"""How long a lease outlives its holder's last renewal (renewed every third of it)."""


class JobLockTimeout(AuxcordError):
    """Another run held the lock for longer than this one was willing to wait."""


def _now() -> datetime:
    return datetime.now(UTC)


def try_acquire(
    database: Database[dict[str, Any]], name: str, owner: str, ttl: timedelta = LEASE_TTL
) -> bool:
    """Take the lease ``name`` for ``owner`` if it is free or expired; True if taken."""
    locks = database[Collection.JOB_LOCKS]
    now = _now()
    try:
        locks.insert_one({"_id": name, "owner": owner, "expires_at": now + ttl})
        return True
    except DuplicateKeyError:
        # Atomic on the one document: of two takers of an expired lease, one matches.
        taken = locks.update_one(
            {"_id": name, "expires_at": {"$lt": now}},
            {"$set": {"owner": owner, "expires_at": now + ttl}},
        )
        return taken.modified_count == 1


@contextmanager
def exclusive(
    database: Database[dict[str, Any]],
    name: str,
    *,
    wait_s: float = 6 * 3600.0,
    poll_s: float = 2.0,
    ttl: timedelta = LEASE_TTL,
) -> Iterator[None]:
    """Hold the lease ``name`` for the block, waiting up to ``wait_s`` for another holder."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    announced = False
    while not try_acquire(database, name, owner, ttl):
        if time.monotonic() >= deadline:
            raise JobLockTimeout(
                f"another {name} run held the lock for over {wait_s:.0f} s; try again later"
            )
        if not announced:
            holder = database[Collection.JOB_LOCKS].find_one({"_id": name}) or {}
            log.info("waiting for another %s run (%s) to finish", name, holder.get("owner"))
            announced = True
        time.sleep(poll_s)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(database, name, owner, ttl, stop), name=f"lease-{name}", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        database[Collection.JOB_LOCKS].delete_one({"_id": name, "owner": owner})


def _renew(
    database: Database[dict[str, Any]],
    name: str,
    owner: str,
    ttl: timedelta,
    stop: threading.Event,
) -> None:
    while not stop.wait(ttl.total_seconds() / 3):
        renewed = database[Collection.JOB_LOCKS].update_one(
            {"_id": name, "owner": owner}, {"$set": {"expires_at": _now() + ttl}}
        )
        if renewed.modified_count != 1:
            # Paused past the TTL (a stopped VM, a long GC): another run may have started.
            log.error("the %s lease was lost while running; another run may overlap", name)
            return
