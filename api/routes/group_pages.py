"""A group's pages: the live feed, leaderboards, member profiles, taste-match, recommendations
and the yearly recap. Each reads precomputed documents through :mod:`api.reads`."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from cachetools import TTLCache
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from markupsafe import Markup
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from analytics.periods import PERIOD_NAMES, Period, period_days, period_key
from api import admin_reads, charts, reads
from api.deps import NOT_FOUND, CurrentUser, DatabaseDep, MemberGroup, member_group_now
from api.live import ChangeSignal, FeedResponse
from api.templating import render, templates
from auxcord.accounts import LinkedAccount
from auxcord.gaps import GapStore
from auxcord.groups import Group

router = APIRouter(prefix="/groups/{group_id}", tags=["group pages"])

PeriodQuery = Annotated[Period, Query(description="day, week, month, year or all")]
FIRST_YEAR, LAST_YEAR = 2000, 2100
"""Spotify did not exist before 2006; anything outside these years is a mistake, and a date
near the ends of Python's range would overflow the period arithmetic."""


def plausible_day(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be a day between {FIRST_YEAR} and {LAST_YEAR}")
    return value


def plausible_moment(value: datetime) -> datetime:
    """A time in UTC between the plausible years (naive times are taken as UTC)."""
    try:
        moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range") from exc
    plausible_day(moment.date())
    return moment


DayQuery = Annotated[
    date | None,
    AfterValidator(lambda value: value and plausible_day(value)),
    Query(description="A day in the period (YYYY-MM-DD)"),
]
BeforeQuery = Annotated[
    datetime | None,
    AfterValidator(lambda value: value and plausible_moment(value)),
    Query(description="Only listens that ended before this time (the previous page's last)"),
]
PROFILE_CHART_DAYS = 30


def viewer_today(user: LinkedAccount) -> date:
    return datetime.now(ZoneInfo(user.timezone)).date()


def default_day(database: reads.Db, group: Group, user: LinkedAccount) -> date:
    """Where a leaderboard opens: the newest aggregated day, else the viewer's today."""
    return reads.latest_group_day(database, group) or viewer_today(user)


def step(period: Period, day: date, direction: int) -> date | None:
    """The day in the previous (-1) or next (+1) period."""
    if period == "all":
        return None
    if period in ("day", "week"):
        return day + timedelta(days=direction * (1 if period == "day" else 7))
    if period == "month":
        month = day.month - 1 + direction
        return date(day.year + month // 12, month % 12 + 1, 1)
    return date(day.year + direction, 1, 1)


def period_title(period: Period, day: date) -> str:
    key = period_key(period, day)
    if period == "day":
        return f"{day:%A} {day.day} {day:%B %Y}"
    if period == "week":
        monday = date.fromisoformat(key.removeprefix("week:"))
        return f"Week of {monday.day} {monday:%B %Y}"
    if period == "month":
        return f"{day:%B %Y}"
    if period == "year":
        return str(day.year)
    return "All time"


def _nav(group: Group, page: str, period: Period, day: date) -> dict[str, Any]:
    previous, following = step(period, day, -1), step(period, day, +1)
    return {
        "period": period,
        "day": day,
        "periods": PERIOD_NAMES,
        "title": period_title(period, day),
        "previous": previous,
        "next": following,
        "base": f"/groups/{group.group_id}/{page}",
    }


@router.get("")
def group_home(
    request: Request, user: CurrentUser, group: MemberGroup, database: DatabaseDep
) -> Response:
    names = reads.people(database, group.members)
    return render(
        request,
        "group_home.html",
        {
            "group": group,
            "names": names,
            "feed": reads.now_playing(database, group),
            "listens": reads.recent_listens(database, group),
            "viewer_zone": user.timezone,
        },
    )


@router.get("/listens")
def more_listens(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    before: BeforeQuery = None,
) -> Response:
    """The next page of recent listens, as a fragment the page appends (or a page without JS)."""
    return render(
        request,
        "listens_page.html",
        {
            "group": group,
            "names": reads.people(database, group.members),
            "listens": reads.recent_listens(database, group, before=before),
            "viewer_zone": user.timezone,
        },
    )


@router.get("/live")
async def live_feed(
    request: Request, user: CurrentUser, group: MemberGroup, database: DatabaseDep
) -> Response:
    """Server-Sent Events: the group's "listening now" feed, re-sent whenever it changes, for
    as long as the session still signs in a member (see :mod:`api.live`)."""
    signal: ChangeSignal = request.app.state.now_playing_signal
    address = request.client.host if request.client else "unknown"
    subscription = signal.subscribe(user=user.user_id, address=address)
    if subscription is None:
        raise HTTPException(
            status_code=429,
            detail="Too many live feeds open. Close some tabs and reload.",
            headers={"Retry-After": "30"},
        )

    async def authorise() -> Group | None:
        found: Group | None = await run_in_threadpool(member_group_now, request, group.group_id)
        return found

    async def read(current: Group) -> list[dict[str, Any]]:
        feed: list[dict[str, Any]] = await run_in_threadpool(reads.now_playing, database, current)
        return feed

    # Subscribed before the response exists, so a full quota is a plain 429; from here on the
    # response owns the feed's place and gives it back however it ends.
    return FeedResponse(subscription, authorise, read, request.is_disconnected)


@router.get("/leaderboard")
def leaderboard(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    period: PeriodQuery = "day",
    day: DayQuery = None,
) -> Response:
    day = day or default_day(database, group, user)
    nav = _nav(group, "leaderboard", period, day)
    key = (database.name, group.group_id, group.members, period, day)
    with _bodies_lock:
        body = _leaderboard_bodies.get(key)
    if body is None:
        # Safe: the output of an autoescaping template, not a string from anywhere else.
        body = Markup(  # noqa: S704
            templates()
            .get_template("leaderboard_body.html")
            .render(_leaderboard_context(database, group, period, day, nav))
        )
        with _bodies_lock:
            _leaderboard_bodies[key] = body
    return render(request, "leaderboard.html", {"group": group, "nav": nav, "body": body})


_leaderboard_bodies: TTLCache[tuple[Any, ...], Markup] = TTLCache(maxsize=2048, ttl=120)
"""Rendered leaderboards. Their documents change only when the daily job runs (nightly), and
rendering fifty members' boards is most of a request's cost, so a page is kept for two minutes
per group, members and day (the same for every member: nothing in it depends on the viewer)."""
_bodies_lock = threading.Lock()


def _leaderboard_context(
    database: reads.Db, group: Group, period: Period, day: date, nav: dict[str, Any]
) -> dict[str, Any]:
    stats = reads.group_stats(database, group, period, day)
    boards = {}
    for board, entries in ((stats or {}).get("leaderboards") or {}).items():
        top = max((float(entry["value"]) for entry in entries), default=0) or 1.0
        boards[board] = [
            {**entry, "share": round(float(entry["value"]) / top, 4)} for entry in entries
        ]
    shared = (stats or {}).get("same_songs")
    if shared is None and stats is not None:
        shared = [track for track in stats.get("top_tracks", []) if track.get("listeners", 0) > 1]
    return {
        "group": group,
        "names": reads.people(database, group.members),
        "stats": stats,
        "boards": boards,
        "shared": shared or [],
        "nav": nav,
    }


@cache
def time_zones() -> list[str]:
    """The IANA zones a listener can pick on their own profile."""
    return sorted(available_timezones())


@router.get("/members/{member_id}")
def member_profile(
    request: Request,
    member_id: str,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    period: PeriodQuery = "month",
    day: DayQuery = None,
) -> Response:
    if member_id not in group.members:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    day = day or default_day(database, group, user)
    person = reads.people(database, [member_id])[member_id]
    stats = reads.member_stats(database, member_id, period, day)
    first, last = period_days(period, day, PROFILE_CHART_DAYS)
    days = reads.member_days(database, member_id, first, last)
    bars = charts.column_chart(
        [d["minutes"] for d in days], charts.day_labels([d["day"] for d in days])
    )
    hours = list((stats or {}).get("hours") or [0] * 24)
    top_hour = max(hours, default=0)
    # Which hours may be missing, and why, is the owner's business: other members never see it.
    gaps = GapStore(database).open_for_user(member_id) if member_id == user.user_id else []
    return render(
        request,
        "member.html",
        {
            "group": group,
            "person": person,
            "stats": stats,
            "bars": bars,
            "chart_total": sum(d["minutes"] for d in days),
            "chart_range": (first, last),
            "label_every": max(1, len(bars) // 5),
            "hours": [(hour, n, charts.intensity(n, top_hour)) for hour, n in enumerate(hours)],
            "nav": _nav(group, f"members/{member_id}", period, day),
            "time_zones": time_zones() if member_id == user.user_id else [],
            "gaps": gaps,
        },
    )


@router.get("/taste")
def taste_match(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    period: PeriodQuery = "all",
    day: DayQuery = None,
) -> Response:
    day = day or default_day(database, group, user)
    stats = reads.group_stats(database, group, period, day)
    names = reads.people(database, group.members)
    members = sorted(group.members, key=lambda member: names[member]["display_name"].casefold())
    pairs = list((stats or {}).get("taste_match") or [])
    return render(
        request,
        "taste.html",
        {
            "group": group,
            "names": names,
            "members": members,
            "cells": charts.match_matrix(members, pairs),
            "pairs": pairs,
            "nav": _nav(group, "taste", period, day),
        },
    )


@router.get("/recommendations")
def recommendations(
    request: Request, user: CurrentUser, group: MemberGroup, database: DatabaseDep
) -> Response:
    return render(
        request,
        "recommendations.html",
        {
            "group": group,
            "names": reads.people(database, group.members),
            "run": reads.recommendations(database, user.user_id, group),
            "last_run": admin_reads.latest_model_run(database),
            "zone": user.timezone,
        },
    )


@router.get("/recap")
def recap(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    database: DatabaseDep,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> Response:
    years = reads.recap_years(database, group)
    chosen = year or (years[0] if years else datetime.now(UTC).year)
    return render(
        request,
        "recap.html",
        {
            "group": group,
            "names": reads.people(database, group.members),
            "recap": reads.group_recap(database, group, chosen),
            "year": chosen,
            "years": years,
        },
    )
