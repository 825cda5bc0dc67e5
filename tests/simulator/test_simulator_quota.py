"""The simulator's 2026 daily quota: a rolling 24 h budget per developer account.

Virtual time is moved with ``/_sim/clock``; nothing here waits for real time to pass. The
simulators run at speed 1, so a Retry-After (real seconds) is also the virtual wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from devtools.simulator.state import DailyQuota, VirtualClock
from devtools.stack import free_port
from tests.simulator.helpers import tokens_for

START = datetime(2026, 11, 20, 12, tzinfo=UTC)
HOUR = 3600
QUOTA_BODY = {
    "error": {
        "status": 429,
        "message": "Daily request quota exceeded for this developer account",
        "reason": "QUOTA_EXCEEDED",
    }
}


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(
        users=3,
        days=1,
        seed=11,
        speed=1,
        start=START,
        rate_budget=2_000,
        daily_quota=1_000,
        developer_accounts={"duo": ("duo-a", "duo-b")},
    )
    with run_simulator_in_thread(config) as running:
        yield running


class App:
    """One user's tokens for one client id, refreshed through the accounts service."""

    def __init__(self, sim: RunningSimulator, client_id: str, user: int = 0) -> None:
        self.sim, self.client_id = sim, client_id
        self.http = requests.Session()
        self.refresh_token = tokens_for(sim, sim.user_ids[user], client_id)["refresh_token"]
        self.refresh()

    def refresh(self) -> requests.Response:
        answer = self.http.post(
            f"{self.sim.url}/api/token",
            timeout=10,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self.refresh_token,
                "client_id": self.client_id,
            },
        )
        if answer.status_code == 200:
            self.http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            self.refresh_token = answer.json().get("refresh_token", self.refresh_token)
        return answer

    def me(self, times: int = 1) -> list[int]:
        url = f"{self.sim.api_base}/me"
        return [self.http.get(url, timeout=10).status_code for _ in range(times)]


def _quota_refusal(response: requests.Response) -> int:
    """Asserts ``response`` is the QUOTA_EXCEEDED 429; returns its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json() == QUOTA_BODY
    return int(response.headers["Retry-After"])


def _accounts(sim: RunningSimulator) -> dict[str, Any]:
    stats: dict[str, Any] = sim.control("stats", method="GET")
    return dict(stats["developer_accounts"])


def test_quota_refuses_with_hours_then_lifts_as_the_oldest_calls_leave(
    sim: RunningSimulator,
) -> None:
    app = App(sim, "solo")  # the code exchange and the refresh are 2 calls
    assert set(app.me(598)) == {200}
    sim.control("clock", {"advance_seconds": 2 * HOUR})
    assert app.refresh().status_code == 200  # access tokens last a virtual hour
    assert set(app.me(399)) == {200}
    assert _accounts(sim)["solo"]["calls_24h"] == 1_000

    retry_after = _quota_refusal(app.http.get(f"{sim.api_base}/me", timeout=10))
    # The 600 oldest calls leave the window 22 h from now: that, not midnight, ends the lockout.
    assert 22 * HOUR - 60 <= retry_after <= 22 * HOUR
    _quota_refusal(app.http.get(f"{sim.api_base}/me/player/recently-played", timeout=10))
    sim.control("clock", {"advance_seconds": 22 * HOUR - 120})
    assert 1 <= _quota_refusal(app.refresh()) <= 120, "token refreshes are refused too"

    sim.control("clock", {"advance_seconds": 120})
    assert app.refresh().status_code == 200
    assert app.me() == [200]
    solo = _accounts(sim)["solo"]
    assert solo == {"calls_24h": 402, "refused_until": None}


def test_developer_accounts_share_a_quota_and_others_are_independent(
    sim: RunningSimulator,
) -> None:
    sim.control("faults", {"daily_quota": 10})
    try:
        first, second, other = App(sim, "duo-a"), App(sim, "duo-b", 1), App(sim, "other", 2)
        assert first.me(6) == [200] * 6  # 2 + 2 + 6 calls by the account "duo"
        assert second.me(2) == [429, 429]
        _quota_refusal(first.http.get(f"{sim.api_base}/me", timeout=10))
        assert other.me(3) == [200] * 3
        accounts = _accounts(sim)
        assert accounts["duo"]["calls_24h"] == 10 and accounts["duo"]["refused_until"]
        assert accounts["other"] == {"calls_24h": 5, "refused_until": None}
        assert "duo-a" not in accounts and "duo-b" not in accounts
    finally:
        sim.control("faults", method="DELETE")
    assert second.me() == [200], "clearing the faults restores the configured quota"


def test_forced_lockout_for_hours_and_refusals_counted_by_reason(sim: RunningSimulator) -> None:
    locked, free = App(sim, "locked"), App(sim, "free", 1)
    before = sim.control("stats", method="GET")["refused"].get("quota_exceeded", 0)
    sim.control("faults", {"quota_lock": {"account": "locked", "hours": 14}})
    try:
        assert 14 * HOUR - 60 <= _quota_refusal(locked.http.get(f"{sim.api_base}/me")) <= 14 * HOUR
        assert locked.me(2) == [429, 429]
        assert free.me() == [200]
        stats = sim.control("stats", method="GET")
        assert stats["refused"]["quota_exceeded"] - before == 3
        assert stats["developer_accounts"]["locked"]["calls_24h"] == 2
        assert stats["developer_accounts"]["locked"]["refused_until"] is not None
        assert stats["daily_quota"] == 1_000
    finally:
        sim.control("faults", method="DELETE")
    assert locked.me() == [200]


@pytest.mark.parametrize(
    "spec", [{"daily_quota": 0}, {"daily_quota": "many"}, {"quota_lock": {"hours": 3}}]
)
def test_bad_quota_faults_are_refused(sim: RunningSimulator, spec: dict[str, Any]) -> None:
    response = requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith("bad fault specification")
    assert sim.control("stats", method="GET")["daily_quota"] == 1_000


def test_token_requests_can_be_spared_from_the_quota() -> None:
    config = SimulatorConfig(
        users=1, days=0, speed=1, start=START, daily_quota=3, quota_counts_accounts=False
    )
    with run_simulator_in_thread(config) as spared:
        app = App(spared, "spared")
        assert app.me(4) == [200, 200, 200, 429]
        assert app.refresh().status_code == 200, "the accounts service ignores the lockout"
        assert _accounts(spared)["spared"]["calls_24h"] == 3
        assert spared.control("stats", method="GET")["token"] == 3


def test_rolling_window_waits_for_as_many_old_calls_as_the_quota_needs() -> None:
    clock = VirtualClock(START, speed=0)  # frozen: only advance() moves it
    quota = DailyQuota(clock, 3)
    for _ in range(3):
        assert quota.admit("a") == 0
        clock.advance(HOUR)
    assert quota.admit("a") == 21 * HOUR * 1000, "the first call leaves 24 h after it was made"
    assert quota.admit("b") == 0
    quota.quota = 2  # lowered: two of the three calls must leave before another one fits
    assert quota.admit("a") == 22 * HOUR * 1000
    clock.advance(22 * HOUR - 1)
    assert quota.admit("a") == 1_000
    clock.advance(1)
    assert quota.admit("a") == 0
    # Full again: the next call waits for the call made at 14:00 the day before to leave.
    assert quota.snapshot()["a"] == {"calls_24h": 2, "refused_until": "2026-11-21T14:00:00.000Z"}


def _auxcord(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "error: --daily-quota must be at least 1 (got 0)"),
        ("lots", "error: --daily-quota expects a whole number of calls per 24 h, got 'lots'"),
    ],
)
def test_simulate_cli_rejects_a_bad_daily_quota_in_one_line(value: str, message: str) -> None:
    process = _auxcord("simulate", "--daily-quota", value, "--port", str(free_port()))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip() == message and out == ""


def test_simulate_cli_serves_the_daily_quota() -> None:
    port = free_port()
    process = _auxcord(
        "simulate",
        "--users",
        "1",
        "--days",
        "0",
        "--port",
        str(port),
        "--daily-quota",
        "3",
        "--developer-account",
        "team=cli-a,cli-b",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                users = requests.get(f"{base}/_sim/users", timeout=2).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)

        class Url:
            url = base

        access = tokens_for(Url(), users[0]["user_id"], "cli-a")["access_token"]
        me = [
            requests.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {access}"}, timeout=5)
            for _ in range(3)
        ]
        assert [r.status_code for r in me] == [200, 200, 429]
        assert me[2].json() == QUOTA_BODY
        stats = requests.get(f"{base}/_sim/stats", timeout=5).json()
        assert stats["daily_quota"] == 3 and stats["developer_accounts"]["team"]["calls_24h"] == 3
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
