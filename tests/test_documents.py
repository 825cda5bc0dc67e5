"""The stored documents' contract: every document a real aggregation and recommendation run
stores validates against :mod:`auxcord.documents`, and ids and period keys are
:mod:`auxcord.periods`' on both the Spark and the Python side."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ValidationError

from analytics.aggregate import aggregate_days
from analytics.recommend.runner import run_recommendations
from auxcord.documents import (
    GroupDay,
    GroupRecap,
    GroupRollup,
    Recommendations,
    UserDay,
    UserRollup,
)
from auxcord.names import Collection
from auxcord.periods import ROLLUP_PERIODS, doc_id, period_key
from tests.analytics.test_aggregate import seed

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import SparkSession

    from auxcord.settings import Settings

MODELS: dict[Collection, type[BaseModel]] = {
    Collection.USER_DAILY: UserDay,
    Collection.GROUP_DAILY: GroupDay,
    Collection.USER_ROLLUPS: UserRollup,
    Collection.GROUP_ROLLUPS: GroupRollup,
    Collection.GROUP_RECAPS: GroupRecap,
    Collection.RECOMMENDATIONS: Recommendations,
}


def expected_id(collection: Collection, document: dict[str, Any]) -> str:
    """What :func:`auxcord.periods.doc_id` makes of the document's owner and key."""
    if collection in (Collection.USER_DAILY, Collection.GROUP_DAILY):
        owner = document.get("user_id") or document["group_id"]
        return doc_id(owner, document["day"])
    if collection in (Collection.USER_ROLLUPS, Collection.GROUP_ROLLUPS):
        return doc_id(document.get("user_id") or document["group_id"], document["period"])
    if collection == Collection.GROUP_RECAPS:
        return doc_id(document["group_id"], int(document["year"]))
    return doc_id(document["run_id"], document["user_id"])


def test_every_stored_document_matches_its_model(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    seed(mongo_db)
    # Across a month's and a week's boundary (2 March is a Monday), with the year and all-time.
    first, last = date(2026, 2, 28), date(2026, 3, 3)
    aggregate_days(test_settings, first, last, spark=spark)
    run_recommendations(test_settings, spark=spark, n=3, now=datetime(2026, 3, 4, tzinfo=UTC))
    stored = {name: list(mongo_db[name].find()) for name in MODELS}
    for name, model in MODELS.items():
        assert stored[name], f"the run stored no {name}"
        for document in stored[name]:
            model.model_validate(document)
            assert document["_id"] == expected_id(name, document)
    periods = {document["period"] for document in stored[Collection.USER_ROLLUPS]}
    assert periods == {
        period_key(period, day) for day in (first, last) for period in ROLLUP_PERIODS
    }, "every rollup period of the range, keyed as auxcord.periods keys them"
    # The optional and nested parts were there to be checked.
    group_days = stored[Collection.GROUP_DAILY]
    assert any(day["same_songs"] for day in group_days)
    assert any(day["taste_match"] for day in group_days)
    assert any(recap["best_match"] for recap in stored[Collection.GROUP_RECAPS])
    assert any(rollup.get("day_minutes") for rollup in stored[Collection.USER_ROLLUPS])
    assert any(
        item["friends"] for doc in stored[Collection.RECOMMENDATIONS] for item in doc["items"]
    )

    # The check can fail: a document missing a field, or with one the model does not know.
    for name, model in MODELS.items():
        document = stored[name][0]
        required = next(
            field.alias or key
            for key, field in model.model_fields.items()
            if field.is_required() and key != "id"
        )
        with pytest.raises(ValidationError, match=required):
            model.model_validate({k: v for k, v in document.items() if k != required})
        with pytest.raises(ValidationError, match="extra"):
            model.model_validate({**document, "unexpected": 1})
    day = stored[Collection.GROUP_DAILY][0]
    broken = {**day, "leaderboards": {**day["leaderboards"], "plays": [{"user_id": "ana"}]}}
    with pytest.raises(ValidationError, match="value"):
        GroupDay.model_validate(broken)


def test_spark_and_python_give_the_same_period_keys(spark: SparkSession) -> None:
    from pyspark.sql import functions as F

    from analytics.rollups import period_key as period_key_column

    # Both ends of years (a week starting in the year before), a leap day, months' ends.
    days = [date(2020, 12, 27) + timedelta(days=n) for n in range(0, 800, 3)]
    days += [date(2024, 2, 29), date(2027, 1, 1), date(2026, 3, 1), date(2026, 3, 2)]
    frame = spark.createDataFrame([(day,) for day in days], "day date")
    periods = ROLLUP_PERIODS
    rows = frame.select(
        "day", *[period_key_column(period, F.col("day")).alias(period) for period in periods]
    ).collect()
    assert len(rows) == len(days)
    for row in rows:
        assert [row[period] for period in periods] == [
            period_key(period, row["day"]) for period in periods
        ], row["day"]


TRICKY_NAMES = [
    "Straße",
    "STRASSE",
    "ẞ",
    "ΣΊΣΥΦΟΣ",
    "ὈΔΥΣΣΕΎΣ ς",
    "İstanbul",
    "ﬁnal ﬂight ﬀ",
    "ǅemal Ǆ",
    "ŉ ǰ ΐ ᾈ",
    "Kelvin \u212a, Ångström \u212b, long \u017f",
    "𐐀𐐨 Ꭰꭰ",
    "Café e\u0301",
    "AC/DC",
    "",
]


def test_local_tracks_have_one_key_in_the_events_and_the_aggregates(spark: SparkSession) -> None:
    """A local file's key is its case-folded names (auxcord.trackkeys) in the events and in
    Spark alike, for every character Python folds and names where lower-casing differs."""
    from analytics.daily import track_key
    from auxcord.events import ListenEvent
    from auxcord.trackkeys import casefold_table, local_track_key
    from tests.analytics.test_daily import play

    single, several = casefold_table()
    assert single and several["ß"] == "ss"
    names = [*TRICKY_NAMES, *single, *several, "".join(single), "".join(several)]
    rows = [(None, name, name.swapcase()) for name in names]
    frame = spark.createDataFrame(rows, "track_id string, artist_name string, track_name string")
    keys = [row.key for row in frame.select(track_key().alias("key")).collect()]
    expected = [local_track_key(artist, track) for _, artist, track in rows]
    mismatches = [
        (name, got, want)
        for name, got, want in zip(names, keys, expected, strict=True)
        if got != want
    ]
    assert mismatches == []
    at = datetime(2026, 3, 1, tzinfo=UTC)
    for name in ("Straße", "ΣΊΣΥΦΟΣ", "ﬁnal ﬂight ﬀ"):
        local = {**play("ana", ("", name, name.upper(), "Album"), at, 1), "track_id": None}
        event = ListenEvent.from_dict({**local, "source": "poll"})
        assert event.track_key == local_track_key(name.upper(), name)
    assert local_track_key("STRASSE", "Straße") == local_track_key("strasse", "STRASSE")
