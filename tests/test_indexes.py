"""One registry of MongoDB indexes (auxcord.indexes): `auxcord provision` creates all of it,
each component creates its own part of it, and no index is defined anywhere else."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from auxcord.indexes import AGGREGATES, INDEXES, STREAMING, ensure_indexes
from auxcord.names import Collection
from auxcord.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("auxcord", "cli", "producers", "streaming", "analytics", "api", "dags", "devtools")
INDEX_CALLS = {"create_index", "create_indexes", "IndexModel"}


def registered_names(collections: tuple[Collection, ...] = tuple(INDEXES)) -> set[str]:
    return {f"{c}.{index.name}" for c in collections for index in INDEXES[c]}


def names_on_server(database: Database[dict[str, Any]]) -> set[str]:
    return {
        f"{collection}.{index['name']}"
        for collection in database.list_collection_names()
        for index in database[collection].list_indexes()
        if index["name"] != "_id_"
    }


def test_registered_names_are_pymongos_and_unique() -> None:
    for collection, indexes in INDEXES.items():
        assert isinstance(collection, Collection)
        names = [index.name for index in indexes]
        assert len(names) == len(set(names)), collection
        for index in indexes:
            document = index.model().document
            assert document["name"] == index.name
            if index.expire_after_seconds is not None:
                assert len(index.keys) == 1, "MongoDB's TTL indexes have one key"
                assert document["expireAfterSeconds"] == index.expire_after_seconds
    assert set(STREAMING) | set(AGGREGATES) <= set(INDEXES)


def index_definitions_outside_the_registry(root: Path) -> list[str]:
    """``file:line name`` for each call that defines an index outside auxcord/indexes.py."""
    found = []
    for package in PRODUCTION:
        for path in sorted((root / package).rglob("*.py")):
            if path == root / "auxcord" / "indexes.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                called = node.func
                name = called.attr if isinstance(called, ast.Attribute) else None
                name = called.id if isinstance(called, ast.Name) else name
                if name in INDEX_CALLS:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_no_index_is_defined_outside_the_registry(tmp_path: Path) -> None:
    assert index_definitions_outside_the_registry(ROOT) == []
    stray = tmp_path / "api" / "stray.py"
    stray.parent.mkdir()
    stray.write_text("def f(db):\n    db.users.create_index('name')\n")
    assert index_definitions_outside_the_registry(tmp_path) == ["api/stray.py:2 create_index"]


@pytest.mark.stack
def test_provision_creates_every_registered_index(test_settings: Settings) -> None:
    from auxcord.clients import mongo_client

    environment = {**os.environ, **test_settings.as_environment()}
    for _ in range(2):  # safe to run again
        result = subprocess.run(
            [sys.executable, "-c", "from cli.main import main; main()", "provision"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert f"MongoDB indexes: {len(registered_names())} in place" in result.stdout
    with mongo_client(test_settings) as client:
        database = client[test_settings.mongodb_database]
        assert names_on_server(database) == registered_names()
        ttl = database[Collection.NOW_PLAYING].index_information()["expires_at_1"]
        assert ttl["expireAfterSeconds"] == 0


@pytest.mark.stack
def test_components_create_only_registered_indexes(mongo_db: Database[dict[str, Any]]) -> None:
    """Each component's own ensure step takes its indexes from the registry."""
    from analytics.aggregate import ensure_indexes as aggregate_indexes
    from analytics.recommend.job import RecommendationRun, write_run
    from api.oauth_states import OAuthStates
    from auxcord.gaps import GapStore
    from auxcord.groups import GroupStore
    from streaming.sinks import ensure_indexes as streaming_indexes

    streaming_indexes(mongo_db)
    assert names_on_server(mongo_db) == registered_names(STREAMING)
    aggregate_indexes(mongo_db)
    GroupStore(mongo_db).ensure_indexes()
    GapStore(mongo_db).ensure_indexes()
    OAuthStates(mongo_db).ensure_indexes()
    write_run(mongo_db, RecommendationRun("run-1", datetime.now(UTC), evaluation=None))
    assert names_on_server(mongo_db) == registered_names()
    assert ensure_indexes(mongo_db, Collection.USERS) == []
