"""The JSON API under ``/api/v1``: everything the pages show, from the same reads.

Authorisation is the pages' (:data:`~api.deps.MemberGroup`): a stranger or an anonymous client
gets 404 for any group URL. Lists are paginated with ``limit`` and a cursor (``before`` for
listens, ``offset`` for groups). As on the pages, people who have left a group are anonymous in
its figures: where a stats or recap document names a former member, the id is ``null``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from api import admin_reads, reads
from api.deps import NOT_FOUND, AdminUser, CurrentUser, DatabaseDep, GroupsDep, MemberGroup
from api.routes.group_pages import BeforeQuery, DayQuery, PeriodQuery, default_day
from auxcord.documents import (
    GroupDay,
    GroupRecap,
    GroupRollup,
    RecommendedTrack,
    UserDay,
    UserRollup,
)
from auxcord.periods import Period, period_key

router = APIRouter(prefix="/api/v1", tags=["api"])

Limit = Annotated[int, Query(ge=1, le=100)]


class Me(BaseModel):
    user_id: str
    display_name: str
    timezone: str
    needs_reauth: bool


class GroupSummary(BaseModel):
    group_id: str
    name: str
    owner: str
    members: list[str]


class GroupPage(BaseModel):
    items: list[GroupSummary]
    next_offset: int | None


class Person(BaseModel):
    user_id: str
    display_name: str
    timezone: str
    needs_reauth: bool


class GroupDetail(GroupSummary):
    people: list[Person]


class NowPlaying(BaseModel):
    user_id: str
    state: str | None
    is_playing: bool
    track_name: str | None
    artist_name: str | None
    album_name: str | None
    album_image_url: str | None
    progress_ms: int | None
    duration_ms: int | None
    observed_at: datetime | None
    started_at: datetime | None
    expires_at: datetime | None


class Listen(BaseModel):
    user_id: str
    track_id: str | None = None
    track_name: str
    artist_name: str
    album_name: str | None = None
    album_image_url: str | None = None
    duration_ms: int
    played_at: datetime


class ListenPage(BaseModel):
    items: list[Listen]
    next_before: datetime | None


StatsDocument = GroupDay | GroupRollup | UserDay | UserRollup
"""What a stats URL shows: a group's or a member's day or rollup."""


class Stats(BaseModel):
    period: str
    key: str
    day: date
    found: bool
    stats: StatsDocument | None
    """The stored document (:mod:`auxcord.documents`) without its ``_id``; a week's or
    all-time's rollup has no full counts, so those fields are absent, not null."""


class SeenRecommendation(RecommendedTrack):
    """A recommended track seen from one group: the friends in it who played the track, and
    how many others (in the user's other groups) did."""

    other_friends: int


class RecommendationList(BaseModel):
    run_id: str | None
    generated_at: datetime | None
    cold_start: bool
    items: list[SeenRecommendation]


class DayPoint(BaseModel):
    day: date
    plays: int
    minutes: float


def _summary(group: Any) -> GroupSummary:
    return GroupSummary(
        group_id=group.group_id, name=group.name, owner=group.owner, members=list(group.members)
    )


def _stats(period: Period, day: date, document: StatsDocument | None) -> Stats:
    return Stats.model_construct(
        period=period,
        key=period_key(period, day),
        day=day,
        found=document is not None,
        stats=document,
    )


@router.get("/me")
def me(user: CurrentUser) -> Me:
    return Me(
        user_id=user.user_id,
        display_name=user.display_name,
        timezone=user.timezone,
        needs_reauth=user.needs_reauth,
    )


@router.get("/groups")
def my_groups(
    user: CurrentUser,
    groups: GroupsDep,
    limit: Limit = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> GroupPage:
    mine = groups.groups_of(user.user_id)
    page = mine[offset : offset + limit]
    more = offset + limit < len(mine)
    return GroupPage(
        items=[_summary(g) for g in page], next_offset=offset + limit if more else None
    )


@router.get("/groups/{group_id}")
def group_detail(group: MemberGroup, database: DatabaseDep) -> GroupDetail:
    people = reads.people(database, group.members)
    return GroupDetail(
        **_summary(group).model_dump(), people=[Person(**p) for p in people.values()]
    )


@router.get("/groups/{group_id}/now-playing")
def group_now_playing(group: MemberGroup, database: DatabaseDep) -> list[NowPlaying]:
    return [NowPlaying(**item) for item in reads.now_playing(database, group)]


@router.get("/groups/{group_id}/listens")
def group_listens(
    group: MemberGroup, database: DatabaseDep, before: BeforeQuery = None, limit: Limit = 30
) -> ListenPage:
    listens = reads.recent_listens(database, group, before=before, limit=limit)
    return ListenPage(
        items=[Listen(**listen) for listen in listens],
        next_before=listens[-1]["played_at"] if len(listens) == limit else None,
    )


@router.get("/groups/{group_id}/stats", response_model_exclude_unset=True)
def group_stats(
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    period: PeriodQuery = "day",
    day: DayQuery = None,
) -> Stats:
    """Leaderboards, top tracks and artists, same songs (days) and taste-match; a former
    member's ``user_id`` (``user_a``, ``user_b``) is ``null``."""
    day = day or default_day(database, group, user)
    return _stats(period, day, reads.group_document(database, group, period, day))


@router.get("/groups/{group_id}/members/{member_id}/stats", response_model_exclude_unset=True)
def member_stats(
    member_id: str,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    period: PeriodQuery = "month",
    day: DayQuery = None,
) -> Stats:
    if member_id not in group.members:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    day = day or default_day(database, group, user)
    return _stats(period, day, reads.member_document(database, member_id, period, day))


@router.get("/groups/{group_id}/members/{member_id}/days")
def member_days(
    member_id: str,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    last: DayQuery = None,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> list[DayPoint]:
    """Plays and minutes per day for the ``days`` days ending at ``last``."""
    if member_id not in group.members:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    last = last or default_day(database, group, user)
    first = last - timedelta(days=days - 1)
    return [DayPoint(**point) for point in reads.member_days(database, member_id, first, last)]


@router.get("/groups/{group_id}/recommendations")
def my_recommendations(
    user: CurrentUser, group: MemberGroup, database: DatabaseDep
) -> RecommendationList:
    """The signed-in member's newest recommendations; friends outside this group are counted,
    not named."""
    return RecommendationList.model_validate(reads.recommendations(database, user.user_id, group))


@router.get("/groups/{group_id}/recap/{year}")
def group_recap(group: MemberGroup, database: DatabaseDep, year: int) -> GroupRecap:
    """The yearly recap; a former member's ``user_id`` (``user_a``, ``user_b``) is ``null``."""
    found = reads.group_recap_document(database, group, year)
    if found is None:
        raise HTTPException(status_code=404, detail=f"No recap for {year} yet.")
    return found


@router.get("/admin/health")
def admin_health(user: AdminUser, database: DatabaseDep) -> dict[str, Any]:
    health = reads.health(database)
    health["pipeline_status"] = {
        key: {k: v for k, v in doc.items() if k != "_id"}
        for key, doc in health["pipeline_status"].items()
    }
    # Spotify's daily quota: each developer account's calls in 24 h, budget and lock-out.
    health["spotify_budgets"] = admin_reads.spotify_budgets(database)
    return health
