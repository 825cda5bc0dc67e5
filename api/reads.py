"""Every read the dashboard makes, one indexed MongoDB query each, never an aggregation.

Pages and the JSON API share these functions, so both show the same numbers. The heavy work
happened earlier: the streaming job keeps ``now_playing`` and ``listens``, the daily jobs keep
``user_daily``, ``group_daily`` and the rollups. Each function here reads documents by ``_id``
or by an indexed prefix (see ``analytics.aggregate.ensure_indexes`` and ``streaming.sinks``).
"""

from __future__ import annotations

import heapq
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from cachetools import TTLCache
from pymongo import DESCENDING
from pymongo.database import Database

from auxcord.documents import (
    GroupDay,
    GroupRecap,
    GroupRollup,
    StoredDocument,
    UserDay,
    UserRollup,
)
from auxcord.groups import Group
from auxcord.names import Collection
from auxcord.periods import Period, doc_id, period_key
from auxcord.pollhealth import STALE_AFTER

Db = Database[dict[str, Any]]

RECENT_PAGE = 30


def _aware(moment: datetime | None) -> datetime | None:
    """pymongo returns naive UTC datetimes; the pages show aware ones."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


_people_cache: TTLCache[tuple[str, tuple[str, ...]], dict[str, dict[str, Any]]] = TTLCache(
    maxsize=4096, ttl=30
)
_people_lock = threading.Lock()


def people(database: Db, user_ids: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``user_id → {display_name, timezone, needs_reauth}`` for ``user_ids``.

    Every group page needs its members' names, and a ``$in`` over fifty ids is slow on some
    servers (SecantusDB scans per id), so names are kept for 30 s: a renamed Spotify account
    shows its new name within half a minute.
    """
    key = (database.name, tuple(user_ids))
    with _people_lock:
        cached = _people_cache.get(key)
    if cached is None:
        cached = _read_people(database, user_ids)
        with _people_lock:
            _people_cache[key] = cached
    return cached


def _read_people(database: Db, user_ids: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    found = {
        str(doc["_id"]): doc
        for doc in database[Collection.USERS].find(
            {"_id": {"$in": list(user_ids)}},
            {"display_name": 1, "timezone": 1, "needs_reauth": 1},
        )
    }
    return {
        user_id: {
            "user_id": user_id,
            "display_name": str(found.get(user_id, {}).get("display_name") or user_id),
            "timezone": str(found.get(user_id, {}).get("timezone") or "UTC"),
            "needs_reauth": bool(found.get(user_id, {}).get("needs_reauth")),
        }
        for user_id in user_ids
    }


def now_playing(database: Db, group: Group, now: datetime | None = None) -> list[dict[str, Any]]:
    """What each member is playing or has paused, newest first; stopped and expired states are
    left out (the TTL index removes them, but only once a minute)."""
    moment = now or datetime.now(UTC)
    # Only live states, through the TTL index on expires_at: few documents, whatever the number
    # of users, and cheaper than a $in over the members on some servers.
    states = database[Collection.NOW_PLAYING].find({"expires_at": {"$gt": moment}})
    members = set(group.members)
    feed: list[tuple[datetime, dict[str, Any]]] = []
    for state in states:
        if state["_id"] not in members:
            continue
        if state.get("state") == "stopped" or not state.get("track_name"):
            continue
        observed = _aware(state.get("observed_at")) or moment
        started = _aware(state.get("started_at"))
        item = {
            "user_id": str(state["_id"]),
            "state": state.get("state"),
            "is_playing": bool(state.get("is_playing")),
            "track_name": state.get("track_name"),
            "artist_name": state.get("artist_name"),
            "album_name": state.get("album_name"),
            "album_image_url": state.get("album_image_url"),
            "progress_ms": state.get("progress_ms"),
            "duration_ms": state.get("duration_ms"),
            "observed_at": observed,
            "started_at": started,
            "expires_at": _aware(state.get("expires_at")),
        }
        feed.append((started or observed, item))
    feed.sort(key=lambda entry: entry[0], reverse=True)
    return [item for _, item in feed]


LISTEN_FIELDS = {
    "_id": 0,
    "user_id": 1,
    "track_id": 1,
    "track_name": 1,
    "artist_name": 1,
    "album_name": 1,
    "album_image_url": 1,
    "played_at": 1,
    "duration_ms": 1,
}


def recent_listens(
    database: Db, group: Group, before: datetime | None = None, limit: int = RECENT_PAGE
) -> list[dict[str, Any]]:
    """The group's newest plays ending before ``before``: one indexed ``(user_id, played_at)``
    range per member, merged here (a ``$in`` over members would sort in memory)."""
    query_time = {"$lt": before} if before else {"$exists": True}
    streams = []
    for member in group.members:
        cursor = (
            database[Collection.LISTENS]
            .find({"user_id": member, "played_at": query_time}, LISTEN_FIELDS)
            .sort("played_at", DESCENDING)
            .limit(limit)
        )
        streams.append(list(cursor))
    merged = heapq.merge(*streams, key=lambda listen: listen["played_at"], reverse=True)
    page = []
    for listen in merged:
        listen["played_at"] = _aware(listen["played_at"])
        page.append(listen)
        if len(page) == limit:
            break
    return page


PERSON_FIELDS = frozenset({"user_id", "user_a", "user_b"})
"""Where group documents (leaderboards, same songs, taste-match, recaps) name a person."""


def without_former_members(value: Any, members: frozenset[str]) -> Any:
    """``value`` with every person who is no longer a member made anonymous: their id becomes
    ``None``, which pages show as "a former member". Their figures stay, so totals still add
    up; who they were does not. Stored documents were computed when they were members."""
    if isinstance(value, dict):
        return {
            key: (
                None
                if key in PERSON_FIELDS and isinstance(item, str) and item not in members
                else without_former_members(item, members)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [without_former_members(item, members) for item in value]
    return value


def fields(document: StoredDocument | None) -> dict[str, Any] | None:
    """A read document's fields as the pages take them: a dict, without ``_id``, with no
    field the stored document lacks (a week keeps no full counts)."""
    return None if document is None else document.model_dump(exclude_unset=True)


D = TypeVar("D", bound=StoredDocument)


def _group_document(
    database: Db, model: type[D], collection: Collection, group: Group, key: str | int
) -> D | None:
    found = database[collection].find_one({"_id": doc_id(group.group_id, key)})
    if found is None:
        return None
    return model.model_validate(without_former_members(found, frozenset(group.members)))


def group_document(
    database: Db, group: Group, period: Period, day: date
) -> GroupDay | GroupRollup | None:
    """The group's document for the day, or for the week, month, year or all-time holding it,
    with former members anonymous, checked against its model."""
    key = period_key(period, day)
    if period == "day":
        return _group_document(database, GroupDay, Collection.GROUP_DAILY, group, key)
    return _group_document(database, GroupRollup, Collection.GROUP_ROLLUPS, group, key)


def group_stats(database: Db, group: Group, period: Period, day: date) -> dict[str, Any] | None:
    """:func:`group_document`'s fields."""
    return fields(group_document(database, group, period, day))


def member_document(
    database: Db, user_id: str, period: Period, day: date
) -> UserDay | UserRollup | None:
    """The member's document for the day or the period holding it, checked against its model."""
    key = period_key(period, day)
    if period == "day":
        found = database[Collection.USER_DAILY].find_one({"_id": doc_id(user_id, key)})
        return None if found is None else UserDay.model_validate(found)
    found = database[Collection.USER_ROLLUPS].find_one({"_id": doc_id(user_id, key)})
    return None if found is None else UserRollup.model_validate(found)


def member_stats(database: Db, user_id: str, period: Period, day: date) -> dict[str, Any] | None:
    """:func:`member_document`'s fields."""
    return fields(member_document(database, user_id, period, day))


def latest_group_day(database: Db, group: Group) -> date | None:
    """The newest day the daily job stored for the group: where the leaderboard opens."""
    newest = database[Collection.GROUP_DAILY].find_one(
        {"group_id": group.group_id}, {"day": 1}, sort=[("day", DESCENDING)]
    )
    return date.fromisoformat(newest["day"]) if newest else None


def member_days(database: Db, user_id: str, first: date, last: date) -> list[dict[str, Any]]:
    """``{day, plays, minutes}`` for every day in ``[first, last]``, zero where none."""
    stored = {
        doc["day"]: doc
        for doc in database[Collection.USER_DAILY].find(
            {"user_id": user_id, "day": {"$gte": first.isoformat(), "$lte": last.isoformat()}},
            {"day": 1, "plays": 1, "minutes": 1},
        )
    }
    days = []
    day = first
    while day <= last:
        doc = stored.get(day.isoformat(), {})
        days.append(
            {
                "day": day,
                "plays": int(doc.get("plays", 0)),
                "minutes": float(doc.get("minutes", 0.0)),
            }
        )
        day += timedelta(days=1)
    return days


def recommendations(database: Db, user_id: str, group: Group) -> dict[str, Any]:
    """The newest recommendation run's list for ``user_id``, seen from ``group``: friends who
    explain a pick are named only if they are in this group, and otherwise only counted."""
    found = database[Collection.RECOMMENDATIONS].find_one(
        {"user_id": user_id}, sort=[("run_id", DESCENDING)]
    )
    if found is None:
        return {"run_id": None, "generated_at": None, "cold_start": False, "items": []}
    items = []
    for item in found.get("items", []):
        friends = [f for f in item.get("friends", []) if f["user_id"] in group.members]
        items.append(
            {
                **item,
                "friends": friends,
                "other_friends": len(item.get("friends", [])) - len(friends),
            }
        )
    return {
        "run_id": found.get("run_id"),
        "generated_at": _aware(found.get("generated_at")),
        "cold_start": bool(found.get("cold_start")),
        "items": items,
    }


def group_recap_document(database: Db, group: Group, year: int) -> GroupRecap | None:
    """The group's recap of ``year``, with former members anonymous."""
    return _group_document(database, GroupRecap, Collection.GROUP_RECAPS, group, year)


def group_recap(database: Db, group: Group, year: int) -> dict[str, Any] | None:
    """:func:`group_recap_document`'s fields."""
    return fields(group_recap_document(database, group, year))


def recap_years(database: Db, group: Group) -> list[int]:
    found = database[Collection.GROUP_RECAPS].find({"group_id": group.group_id}, {"year": 1})
    return sorted((int(doc["year"]) for doc in found), reverse=True)


def health(database: Db, now: datetime | None = None) -> dict[str, Any]:
    """The self-hoster's view: each user's polling, who needs to sign in again, how far the
    pipeline is behind, and how many messages were dead-lettered."""
    moment = now or datetime.now(UTC)
    users = {str(doc["_id"]): doc for doc in database[Collection.USERS].find()}
    states = {str(doc["_id"]): doc for doc in database[Collection.POLL_STATE].find()}
    rows = []
    for user_id, user in sorted(users.items()):
        state = states.get(user_id, {})
        last_success = _aware(state.get("last_success_at"))
        stale = not user.get("needs_reauth") and (
            last_success is None or moment - last_success > STALE_AFTER
        )
        rows.append(
            {
                "user_id": user_id,
                "display_name": str(user.get("display_name") or user_id),
                "needs_reauth": bool(user.get("needs_reauth")),
                "last_success_at": last_success,
                "lag_s": state.get("lag_s"),
                "last_error": state.get("last_error"),
                "consecutive_errors": int(state.get("consecutive_errors") or 0),
                "stale": stale,
            }
        )
    newest = database[Collection.LISTENS].find_one(
        {}, {"played_at": 1}, sort=[("played_at", DESCENDING)]
    )
    newest_play = _aware(newest["played_at"]) if newest else None
    status = {str(doc["_id"]): doc for doc in database[Collection.PIPELINE_STATUS].find()}
    return {
        "users": rows,
        "stale_users": [row["user_id"] for row in rows if row["stale"]],
        "needs_reauth": [row["user_id"] for row in rows if row["needs_reauth"]],
        "newest_play_at": newest_play,
        "pipeline_lag_s": (moment - newest_play).total_seconds() if newest_play else None,
        "dead_letters": database[Collection.DEAD_LETTERS].estimated_document_count(),
        "pipeline_status": status,
    }
