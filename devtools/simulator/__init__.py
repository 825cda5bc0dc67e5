"""A faithful Spotify simulator: accounts service, the Web API subset auxcord uses, and ``/_sim``.

Nothing reaches Spotify from here, so tests, benchmarks and the demo run against this instead.
Its responses follow the published OpenAPI schema; its play history (the ground truth) is what
auxcord's no-loss tests compare against.

    with run_simulator_in_thread(SimulatorConfig(users=5, days=3, seed=7)) as sim:
        sim.url, sim.api_base, sim.user_ids, sim.ground_truth(), sim.control("clock", {...})

Control endpoints (JSON, under ``/_sim``): ``users``, ``ground-truth`` (JSON lines,
``?user=``), ``faults`` (POST ``fail_next``, ``fail_status``, ``malformed_next``, ``slow_ms``,
``storm_seconds``, ``storm_retry_after``, ``only_user``, ``daily_quota`` (N, or null for none),
``quota_lock`` (``{"account": A, "hours": H}``: lock a developer account out now); DELETE clears
them all and restores the configured quota), ``users/{id}/revoke``, ``users/{id}/play`` (force a
track change now), ``tokens/expire``, ``clock`` (GET, or POST ``advance_seconds``), ``stats``
(calls per endpoint and per client id, ``token`` requests, ``refused`` by cause, ``daily_quota``,
and per developer account ``calls_24h`` and ``refused_until``), ``art/{id}.svg``.

The 2026 daily quota (``SimulatorConfig.daily_quota``, ``auxcord simulate --daily-quota N``): a
rolling 24 virtual hours per developer account (``developer_accounts``; by default each client
id is its own). Beyond it every call of that account is answered ``429`` with ``{"error":
{"status": 429, "message": ..., "reason": "QUOTA_EXCEEDED"}}`` until enough of its oldest calls
have left the window. Retry-After is in real seconds, like the 30 s limit's and like
``expires_in``: the virtual wait divided by the clock's speed (at speed 1, hours). The 30 s limit's
429 has no ``reason``.

Linking headlessly: ``/authorize`` consents at once for the user named by the extra query
parameter ``sim_user`` (real Spotify ignores unknown parameters); without it, it lists users.
"""

from devtools.simulator.server import (
    RunningSimulator,
    SimulatorConfig,
    run_simulator_in_thread,
    write_ground_truth,
)

__all__ = ["RunningSimulator", "SimulatorConfig", "run_simulator_in_thread", "write_ground_truth"]
