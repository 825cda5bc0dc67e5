"""Durable progress of history imports in MongoDB, so a killed import goes on where it stopped.

One document per import (``history_imports``), keyed by the user and a digest of the export's
bytes, so running the same import again resumes it and a different export starts afresh:

    {_id, user_id, files, status, cursor, plays, days, started_at, updated_at}

``cursor`` counts the import's plays (in their deterministic order) already acknowledged by
Kafka; it only moves after the acknowledgement, and is written with ``j=True`` like the poll
cursors. ``days`` is written *before* a chunk is published, so the days an interrupted run
touched are re-aggregated by the run that finishes it. ``status`` goes ``publishing`` →
``published`` → ``aggregated``; the CLI skips the steps already done.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from auxcord.names import Collection

Status = Literal["publishing", "published", "aggregated"]


class ImportStateStore:
    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self._imports = database.get_collection(
            Collection.HISTORY_IMPORTS, write_concern=WriteConcern(w=1, j=True)
        )

    def begin(
        self, import_id: str, user_id: str, files: list[str], plays: int, now: datetime
    ) -> dict[str, Any]:
        """Start the import, or return the state an earlier run of it left."""
        document = self._imports.find_one_and_update(
            {"_id": import_id},
            {
                "$setOnInsert": {
                    "user_id": user_id,
                    "files": files,
                    "status": "publishing",
                    "cursor": 0,
                    "days": [],
                    "started_at": now,
                },
                "$set": {"plays": plays, "updated_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert document is not None  # upserted
        return document

    def add_days(self, import_id: str, days: set[date]) -> None:
        if days:
            self._imports.update_one(
                {"_id": import_id},
                {"$addToSet": {"days": {"$each": sorted(day.isoformat() for day in days)}}},
            )

    def advance(self, import_id: str, cursor: int, now: datetime) -> None:
        self._imports.update_one(
            {"_id": import_id}, {"$max": {"cursor": cursor}, "$set": {"updated_at": now}}
        )

    def mark(self, import_id: str, status: Status, now: datetime) -> None:
        self._imports.update_one(
            {"_id": import_id}, {"$set": {"status": status, "updated_at": now}}
        )

    def get(self, import_id: str) -> dict[str, Any] | None:
        return self._imports.find_one({"_id": import_id})
