"""One MongoClient per process and server URI: calls share it instead of leaking a pool each."""

from __future__ import annotations

from pathlib import Path

from auxcord.clients import mongo_database
from auxcord.settings import load_settings


def test_database_handles_share_one_client_per_uri(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    other = settings.model_copy(
        update={"mongodb_uri": settings.mongodb_uri.replace("/auxcord?", "/elsewhere?")}
    )
    # pymongo connects lazily: no server is needed to see which client a handle uses.
    assert mongo_database(settings).client is mongo_database(settings).client
    assert mongo_database(other).client is not mongo_database(settings).client
    assert mongo_database(other).name == "elsewhere"
