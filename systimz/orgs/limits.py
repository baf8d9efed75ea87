"""Plan limits (contract, "Limits"). Pure data and arithmetic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    concurrent_sessions: int
    session_seconds: int
    idle_timeout_seconds: int
    monthly_minutes: int | None  # None: unlimited

    def as_dict(self) -> dict[str, int | None]:
        return {
            "concurrent_sessions": self.concurrent_sessions,
            "session_seconds": self.session_seconds,
            "idle_timeout_seconds": self.idle_timeout_seconds,
            "monthly_minutes": self.monthly_minutes,
        }


TRIAL = Limits(
    concurrent_sessions=3, session_seconds=600, idle_timeout_seconds=120, monthly_minutes=300
)
ENTERPRISE_DEFAULT = Limits(
    concurrent_sessions=100, session_seconds=3600, idle_timeout_seconds=120, monthly_minutes=None
)

# Bounds for an enterprise organisation's own values. The idle bounds are the contract's; the
# others keep a typo from granting a day-long session or ten thousand parallel ones.
CONCURRENT_SESSIONS_RANGE = (1, 1000)
SESSION_SECONDS_RANGE = (60, 4 * 3600)
IDLE_TIMEOUT_RANGE = (30, 3600)
MONTHLY_MINUTES_RANGE = (1, 10_000_000)
