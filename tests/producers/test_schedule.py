"""The polling plan over simulated weeks, with a fake clock and in-memory Spotify, Kafka and state
(devtools/schedule_sim.py): no servers, a simulated week in well under a second of CPU. Each
test checks the budget against every rolling 24 h of the fake Spotify's own call log, and the
published plays against the fake's ground truth.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from auxcord.gaps import GapCause
from auxcord.spotify import RateLimited
from devtools.schedule_sim import (
    HOUR,
    START,
    Counts,
    FakeClock,
    FakeKafka,
    FakeSink,
    FakeSpotify,
    FakeState,
    Listener,
    Play,
    five_friends,
    live_delays,
    p95,
    simulate,
)
from producers.schedule import (
    DAY_S,
    AccountBudget,
    PollEngine,
    PollerConfig,
    projected_exhaustion,
)


def test_a_week_of_five_friends_stays_in_budget_and_misses_no_play() -> None:
    started = time.process_time()
    run = simulate(five_friends(7), 7)
    print(f"a simulated week: {time.process_time() - started:.2f} s of CPU")
    assert run.spotify.most_in_a_day("app") <= 750
    assert not run.spotify.refused
    missing = run.missing()
    assert not missing, {user: len(plays) for user, plays in missing.items()}
    assert not run.state.gaps
    plays = sum(len(listener.listed) for listener in run.listeners.values())
    assert plays > 2_000, "the binges alone are 1,680 plays"
    # Every day's calls, refreshes included: at most 150 per user on average.
    assert len(run.spotify.calls["app"]) / 5 / 7 <= 150


@pytest.mark.parametrize("budget", [750, 5_000])
def test_live_feed_sees_track_changes_within_a_minute_and_session_starts_within_20(
    budget: int,
) -> None:
    listeners = five_friends(4, seed=2)
    run = simulate(listeners, 4, budget=budget)
    # The binger's 30 s tracks: the pace decides, and the benchmark measures it.
    changes, starts = live_delays(run, ["user1", "user2", "user3", "user4"])
    assert len(changes) > 300 and len(starts) > 20
    assert p95(starts) <= 20 * 60
    if budget >= 5_000:
        # A budget that does not bind (about 600 calls a user a day for these heavy listeners,
        # 2.5 h a day each): the plan's own freshness.
        assert p95(changes) <= 60
    else:
        # 150 calls a user a day: completeness and token refreshes take about 100 of them, so
        # the feed falls behind (bench/RESULTS.md) rather than the budget running out.
        print(f"budget {budget}: track changes p50 {changes[len(changes) // 2]:.0f} s")


def test_a_quota_lockout_during_a_binge_loses_plays_only_inside_recorded_gaps() -> None:
    listeners = five_friends(3, seed=3)
    # Locked for 13 h from 01:00 on the second day: the binger's 02:00 binge overflows.
    run = simulate(listeners, 3, lockout=("app", DAY_S + HOUR, 13))
    assert run.spotify.refused["app"] == 1, "one refusal, then no call until the lock ends"
    lock = run.spotify.locks["app"]
    calls = run.spotify.calls["app"]
    assert not [at for at in calls if lock[0] <= at < lock[1]], "no call while locked"
    missing = run.missing()
    assert missing.get("user0"), "the binge overflowed the window"
    gaps = run.state.gaps
    assert {cause for *_, cause in gaps} == {GapCause.QUOTA_LOCKOUT}
    for user, plays in missing.items():
        spans = [(start, end) for who, start, end, _ in gaps if who == user]
        for play in plays:
            assert any(start < play.end * 1000 < end for start, end in spans), play
    for user, start, end, _ in gaps:
        assert any(start < play.end * 1000 < end for play in missing.get(user, [])), (
            "a gap where nothing was lost"
        )
    # The other friends listened through the lockout too, but their windows held.
    assert set(missing) == {"user0"} or all(user in {g[0] for g in gaps} for user in missing)


@pytest.mark.parametrize("binged_before", [False, True])
def test_a_probe_between_two_tracks_of_a_binge(binged_before: bool) -> None:
    """Idle probes come every 20 minutes, and one that falls in the second and a half between two
    30 s tracks sees nothing playing: the 20 minutes before it would count as idle, and the
    binge fills the window before the next read. A user seen playing short tracks is watched
    through recently-played while idle, which no probe timing fools; before the first such
    track the plan cannot know, and the plays it loses lie in a recorded gap, whose cause does
    not blame a poller that ran all along."""
    config = PollerConfig(daily_budget=750)
    # The probes at 0, 1,200 and 2,400 s see an idle player (no surplus probes in between):
    # the binge starts just after the second, and the third falls between tracks 36 and 37.
    assert config.idle_s == 1_200
    config = replace(config, idle_surplus_s=config.idle_s)
    start, period = 2_400 - 32 * 36 - 31, 32.0
    # An earlier play sets the cursor (a gap is measured from it): a short one, or not.
    length = 30.5 if binged_before else 200.0
    earlier = Play(START - 2 * HOUR, length, 999, length)
    binge = [Play(START + start + n * period, 30.5, n, 30.5) for n in range(120)]
    listeners = {"bingeing": Listener([earlier, *binge]), "idle": Listener([])}
    run = simulate(listeners, 0.25, config=config)
    lost = run.missing().get("bingeing", [])
    if binged_before:
        assert not lost and not run.state.gaps
        return
    assert lost, "the probe between two tracks hid the first 20 minutes of the binge"
    [(user, gap_start, gap_end, cause)] = run.state.gaps
    assert user == "bingeing" and cause is GapCause.UNKNOWN
    assert all(gap_start < play.end * 1000 < gap_end for play in lost)


def test_a_locked_account_does_not_hold_back_another_account() -> None:
    listeners = five_friends(2, seed=4)
    apps = {user: ("app-a" if user in ("user0", "user1") else "app-b") for user in listeners}
    run = simulate(listeners, 2, apps=apps, lockout=("app-a", HOUR, 20))
    lock = run.spotify.locks["app-a"]
    during = [at for at in run.spotify.calls["app-b"] if lock[0] <= at < lock[1]]
    assert len(during) > 50, "the other developer account kept polling"
    assert not [at for at in run.spotify.calls["app-a"] if lock[0] <= at < lock[1]]
    assert not {user for user in run.missing()} - {"user0", "user1"}


def test_the_hard_limit_holds_when_the_budget_is_too_small() -> None:
    run = simulate(five_friends(3, seed=5), 3, budget=300)
    assert run.spotify.most_in_a_day("app") <= 300
    assert not run.spotify.refused


def test_budget_keeps_room_for_essential_calls_and_never_passes_the_budget() -> None:
    config = PollerConfig(daily_budget=1_000)
    budget = AccountBudget("acct", config, START)
    # One user: 72 idle probes, 4 idle reads and 24 token refreshes a day, plus 15 %.
    assert budget.essential_reserve() == pytest.approx(115)
    assert budget.live_allowance == pytest.approx(885)
    live = 0
    while budget.spend(START, 1, essential=False) == 0:
        live += 1
    assert live == 265, "live calls stop when the burst (30 % of the day's allowance) is spent"
    assert budget.stretch(START) == config.max_stretch
    # Essential calls go on up to the budget, never past it.
    essential = 0
    while budget.spend(START, 1, essential=True) == 0:
        essential += 1
    assert live + essential == 1_000
    wait = budget.spend(START + 10, 1, essential=True)
    assert wait == pytest.approx(DAY_S - 10)
    assert budget.blocked_between(START, START + 20), "a spent budget counts as a lockout"
    assert budget.calls_24h(START + DAY_S + 1) == 0


def test_projected_exhaustion_at_the_last_hours_rate() -> None:
    # 10 calls an hour run out of 100 within a day; 2 an hour never do.
    hourly = [START - 3600 + n * 360 for n in range(10)]
    assert projected_exhaustion(hourly, [], 100, START) is not None
    assert projected_exhaustion(hourly[:2], [], 100, START) is None
    # Another poller's calls count as well.
    assert projected_exhaustion(hourly[:2], [(START - 60, 98)], 100, START) is not None


def test_a_lock_refuses_every_call_until_it_ends() -> None:
    budget = AccountBudget("acct", PollerConfig(), START)
    assert budget.lock(START, START + 13 * HOUR, "QUOTA_EXCEEDED")
    assert not budget.lock(START + 1, START + 2 * HOUR, "QUOTA_EXCEEDED"), "logged once"
    assert budget.spend(START + HOUR, 1, essential=True) == pytest.approx(12 * HOUR)
    assert budget.spend(START + 13 * HOUR, 1, essential=True) == 0


def test_a_short_429_pauses_only_its_app() -> None:
    listeners = five_friends(1, seed=6)
    clock = FakeClock()
    apps = {user: ("a" if user == "user0" else "b") for user in listeners}
    spotify = FakeSpotify(clock, listeners, apps)
    engine = PollEngine(
        PollerConfig(),
        spotify=spotify,
        sink=FakeSink(FakeKafka()),
        state=FakeState(),
        clock=clock,
        observer=Counts(),
    )
    for user in listeners:
        engine.add_user(user)
    engine._failed("user0", RateLimited(30, "a"))
    before = len(spotify.calls["b"])
    engine.round("user1")
    engine.round("user0")
    assert len(spotify.calls["b"]) > before and not spotify.calls["a"]
    assert engine.plans["user0"].next_playing == pytest.approx(START + 30)
