"""The one exception tree of auxcord.

Library errors (pymongo, kafka-python, spotipy, google-cloud-storage) are translated at the
boundary with ``raise AuxcordError(...) from exc`` so that callers, the CLI in particular, can
print one clear line instead of a stack trace.
"""

from __future__ import annotations


class AuxcordError(Exception):
    """Base of every error auxcord raises on purpose."""


class ConfigError(AuxcordError):
    """A setting is missing or malformed. The message names the environment variable."""


class InvalidEvent(AuxcordError):
    """An event failed validation. ``reason`` says what was wrong, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StackError(AuxcordError):
    """The local service stack could not be started, reached or stopped."""


class ServiceError(AuxcordError):
    """MongoDB, Kafka or GCS failed in a way only its operator can fix (it is down, it refuses
    our credentials). The message names the service, where it was looked for (never with a
    password), what went wrong and what to check, in one line."""

    def __init__(self, service: str, endpoint: str, problem: str, hint: str) -> None:
        super().__init__(f"{service} at {endpoint} {problem}; {hint}")
        self.service, self.endpoint, self.problem, self.hint = service, endpoint, problem, hint


class ServiceUnavailable(ServiceError):
    """The service did not answer: not running, unreachable, or too slow."""


class ServiceAccessDenied(ServiceError):
    """The service answered but refused the configured credentials or permissions."""
