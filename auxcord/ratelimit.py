"""A rolling-window call budget per key, the way Spotify counts its rate limit.

Used on both sides of the wire: the Spotify simulator answers 429 with it, the pollers pace each
Spotify app with it, and the web app slows down sign-in floods with it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RollingWindowLimiter:
    """At most ``budget`` calls per key in any ``window_s`` seconds.

    Keys whose calls have all left the window are dropped, at most once per window, so a
    limiter keyed by client address holds only the addresses seen in the last window however
    many came and went before.
    """

    def __init__(self, budget: int, window_s: float = 30.0) -> None:
        if budget < 1 or window_s <= 0:
            # A zero budget could never admit a call, and would index an empty window.
            raise ValueError(
                f"a rolling window needs budget >= 1 and window > 0: {budget}, {window_s}"
            )
        self.budget, self.window_s = budget, window_s
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_prune = -math.inf

    def __len__(self) -> int:
        """How many keys are tracked."""
        with self._lock:
            return len(self._calls)

    def admit(self, key: str, now: float | None = None) -> float:
        """0 if the call may go ahead (and counts it), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            calls = self._calls.setdefault(key, deque())
            while calls and calls[0] <= now - self.window_s:
                calls.popleft()
            if len(calls) >= self.budget:
                return calls[0] + self.window_s - now
            calls.append(now)
            return 0.0

    def _prune(self, now: float) -> None:
        """Forget keys with no call in the window (the caller holds the lock)."""
        horizon = now - self.window_s
        for key in [key for key, calls in self._calls.items() if calls[-1] <= horizon]:
            del self._calls[key]
        self._next_prune = now + self.window_s
