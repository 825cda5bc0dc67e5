"""The sign-in rate limit counts the real client: forwarded headers are believed only from the
configured proxies, and the limiter forgets addresses whose calls have left its window."""

from __future__ import annotations

import httpx
import pytest

from api.security import AUTH_REQUESTS_PER_MINUTE
from auxcord.ratelimit import RollingWindowLimiter
from auxcord.settings import Settings
from cli.webserver import serve_in_thread
from devtools.stack import free_port


def test_the_limiter_forgets_addresses_that_went_quiet() -> None:
    limiter = RollingWindowLimiter(2, window_s=60.0)
    for number in range(1000):
        assert limiter.admit(f"10.0.{number // 250}.{number % 250}", now=float(number) / 100) == 0
    assert len(limiter) == 1000
    assert limiter.admit("10.9.9.9", now=70.0) == 0
    assert len(limiter) == 1, "only the address of the last minute is kept"
    # Forgetting never lets an address past its budget.
    assert limiter.admit("10.9.9.9", now=71.0) == 0
    assert limiter.admit("10.9.9.9", now=72.0) == 58.0


@pytest.mark.parametrize(("budget", "window_s"), [(0, 60.0), (-1, 60.0), (5, 0.0)])
def test_a_limiter_that_could_admit_nothing_is_refused(budget: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="budget >= 1 and window > 0"):
        RollingWindowLimiter(budget, window_s=window_s)


def _sign_in_attempts(base: str, forwarded_for: str, n: int) -> list[int]:
    with httpx.Client(base_url=base) as client:
        return [
            client.get("/auth/callback", headers={"X-Forwarded-For": forwarded_for}).status_code
            for _ in range(n)
        ]


def test_forwarded_addresses_count_only_from_configured_proxies(test_settings: Settings) -> None:
    budget = AUTH_REQUESTS_PER_MINUTE
    # Our requests come from 127.0.0.1: first as a client no proxy setting names, then as
    # the configured proxy.
    for proxies, believed in (("10.255.255.1", False), ("127.0.0.1", True)):
        settings = test_settings.model_copy(update={"forwarded_allow_ips": proxies})
        port = free_port()
        with serve_in_thread(settings, "127.0.0.1", port) as base:
            assert set(_sign_in_attempts(base, "203.0.113.1", budget)) == {400}
            # A new forwarded address is a new client only if the sender is a known proxy.
            other = _sign_in_attempts(base, "203.0.113.2", 1)
            assert other == ([400] if believed else [429]), proxies
            assert _sign_in_attempts(base, "203.0.113.1", 1) == [429], "the budget holds"
