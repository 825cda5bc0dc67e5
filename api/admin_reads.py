"""Reads about auxcord's own machinery: the stream, the pollers, Spotify's daily budget per
developer account, gaps in collected history and the newest model run.

``/admin`` shows all of it (``/api/v1/admin/health`` the budgets too); the "For you" page says
when recommendations were last made. :func:`api.reads.health` stays the users' polling view;
this module adds what it does not read, one small query per collection (each holds a document
per user, account, poller or run, so a self-hosted group's are a few dozen at most).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING

from api import reads
from auxcord.gaps import GapStore
from auxcord.names import Collection
from auxcord.pollhealth import STALE_AFTER

Db = reads.Db

OFFSET_RESETS_SHOWN = 5


def spotify_budgets(database: Db, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each developer account's calls in the last 24 h against its budget, as the pollers last
    wrote them (``spotify_budgets``), with whether Spotify has it locked out right now."""
    moment = now or datetime.now(UTC)
    accounts = []
    for document in database[Collection.SPOTIFY_BUDGETS].find().sort("_id"):
        budget = int(document.get("budget") or 0)
        calls = int(document.get("calls_24h") or 0)
        locked_until = document.get("locked_until")
        accounts.append(
            {
                "account_id": str(document["_id"]),
                "client_ids": [str(client) for client in document.get("client_ids") or []],
                "budget": budget,
                "calls_24h": calls,
                "refused_24h": int(document.get("refused_24h") or 0),
                "used": min(1.0, calls / budget) if budget > 0 else 0.0,
                # A lock in the past is over: Spotify answers that account again.
                "locked": locked_until is not None and locked_until > moment,
                "locked_until": locked_until,
                "lock_reason": document.get("lock_reason"),
                "projected_exhaustion_at": document.get("projected_exhaustion_at"),
                "updated_at": document.get("updated_at"),
            }
        )
    return accounts


def open_gaps(database: Db) -> list[dict[str, Any]]:
    """Every unrepaired gap, newest first, with its user's name."""
    gaps = GapStore(database).open_all()
    names = reads.people(database, sorted({gap.user_id for gap in gaps}))
    return [
        {
            "user_id": gap.user_id,
            "display_name": names[gap.user_id]["display_name"],
            "start": gap.start,
            "end": gap.end,
            "cause": gap.cause.value,
            "cause_text": gap.cause.description,
            "detected_at": gap.detected_at,
        }
        for gap in gaps
    ]


def stream_status(database: Db) -> dict[str, Any] | None:
    """The streaming job's last batch (``pipeline_status`` ``stream``), or None before its first.

    ``lag_s`` is how long the newest record of the last batch took from Kafka to MongoDB: the
    stream's own delay. How old the newest stored play is says nothing about the stream (it
    grows whenever nobody listens), so the page shows both, labelled.
    """
    status = database[Collection.PIPELINE_STATUS].find_one({"_id": "stream"})
    if status is None:
        return None
    updated, newest = status.get("updated_at"), status.get("newest_record")
    resets = sorted(status.get("offset_resets") or [], key=lambda r: r["at"], reverse=True)
    return {
        "run_id": status.get("run_id"),
        "batch_id": status.get("batch_id"),
        "batch_records": int(status.get("batch_records") or 0),
        "batch_seconds": status.get("batch_seconds"),
        "updated_at": updated,
        "newest_record": newest,
        "lag_s": (updated - newest).total_seconds() if updated and newest else None,
        "partitions": sorted(
            status.get("partition_ends") or [], key=lambda p: (p["topic"], p["partition"])
        ),
        "offset_resets": resets[:OFFSET_RESETS_SHOWN],
    }


def job_failures(database: Db) -> list[dict[str, Any]]:
    """The newest recorded failure of each batch job (``pipeline_status`` other than the
    stream, written by :func:`analytics.pipeline_status.record_failure`)."""
    found = database[Collection.PIPELINE_STATUS].find(
        {"_id": {"$ne": "stream"}, "last_failure": {"$exists": True}}
    )
    return [
        {"job": str(doc["_id"]), **doc["last_failure"]}
        for doc in sorted(found, key=lambda doc: doc["last_failure"]["at"], reverse=True)
    ]


def pollers(database: Db, now: datetime | None = None) -> dict[str, Any]:
    """Live poller processes with how many users each holds, and each user's poller and newest
    collected play (its cursor: the newest play safely on Kafka)."""
    moment = now or datetime.now(UTC)
    live: dict[str, int] = {}
    holder: dict[str, str] = {}
    for lease in database[Collection.POLLER_LEASES].find({"expires_at": {"$gte": moment}}):
        if lease.get("kind") == "poller":
            live.setdefault(str(lease["owner"]), 0)
        else:
            holder[str(lease["_id"])] = str(lease["owner"])
    for owner in holder.values():
        live[owner] = live.get(owner, 0) + 1
    cursors = {
        str(doc["_id"]): datetime.fromtimestamp(int(doc["cursor_ms"]) / 1000, UTC)
        for doc in database[Collection.POLL_STATE].find(
            {"cursor_ms": {"$exists": True}}, {"cursor_ms": 1}
        )
    }
    return {
        "processes": [{"poller_id": owner, "users": n} for owner, n in sorted(live.items())],
        "holder": holder,
        "newest_collected": cursors,
    }


def admin_overview(database: Db, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``/admin`` shows, read at one moment."""
    moment = now or datetime.now(UTC)
    return {
        "now": moment,
        "health": reads.health(database, moment),
        "stale_after_s": STALE_AFTER.total_seconds(),
        "stream": stream_status(database),
        "jobs": job_failures(database),
        "pollers": pollers(database, moment),
        "budgets": spotify_budgets(database, moment),
        "gaps": open_gaps(database),
    }


def latest_model_run(database: Db, kind: str = "recommendations") -> dict[str, Any] | None:
    """The newest stored run of ``kind`` (``model_runs``): when it was made, for how many, and
    why it fell back to the popularity baseline if it did (``fallback``)."""
    return database[Collection.MODEL_RUNS].find_one(
        {"kind": kind},
        {"run_id": 1, "generated_at": 1, "users": 1, "fallback": 1},
        sort=[("generated_at", DESCENDING)],
    )
