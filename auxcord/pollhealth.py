"""When a user's polling counts as unhealthy: shared by the pollers, which write
``poll_state``, and the web app's health pages and metrics, which read it (the web process
imports no producer code, so the threshold lives in the core)."""

from __future__ import annotations

from datetime import timedelta

STALE_AFTER = timedelta(minutes=45)
"""A user is stale (an alert on /admin) after this long without a good poll. An idle user is
probed every 20 minutes to spare the daily quota (producers.schedule), so anything shorter
would flag every quiet friend; a quota lockout or an outage shows within the hour."""
