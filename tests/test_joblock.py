"""One aggregation at a time per database (auxcord/joblock.py), against the real MongoDB."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from pymongo.database import Database

from auxcord.joblock import JobLockTimeout, exclusive, try_acquire
from auxcord.names import Collection


def test_a_second_run_waits_for_the_first(mongo_db: Database[dict[str, Any]]) -> None:
    events: list[str] = []
    first_holds = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with exclusive(mongo_db, "aggregate", poll_s=0.05):
            events.append("first in")
            first_holds.set()
            release_first.wait(30)
            events.append("first out")

    def second() -> None:
        first_holds.wait(30)
        with exclusive(mongo_db, "aggregate", poll_s=0.05):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_holds.wait(30)
    # The second is now polling: it may not get in while the first holds the lease.
    assert not try_acquire(mongo_db, "aggregate", "someone else")
    release_first.set()
    for thread in threads:
        thread.join(60)
    assert events == ["first in", "first out", "second in"]
    assert mongo_db[Collection.JOB_LOCKS].count_documents({}) == 0, "released after use"


def test_an_expired_lease_is_taken_over(mongo_db: Database[dict[str, Any]]) -> None:
    # A holder that died: its lease lapsed and nobody renews it.
    assert try_acquire(mongo_db, "aggregate", "dead", ttl=timedelta(seconds=-1))
    with exclusive(mongo_db, "aggregate", poll_s=0.05, wait_s=30):
        holder = mongo_db[Collection.JOB_LOCKS].find_one({"_id": "aggregate"})
        assert holder is not None and holder["owner"] != "dead"


def test_waiting_past_the_limit_is_one_clear_error(mongo_db: Database[dict[str, Any]]) -> None:
    assert try_acquire(mongo_db, "aggregate", "busy")
    with (
        pytest.raises(JobLockTimeout, match="another aggregate run held the lock"),
        exclusive(mongo_db, "aggregate", poll_s=0.01, wait_s=0.05),
    ):
        pass
