"""The ratelimiter subject: a distributed rate limiter sharing state in Redis.

Registered in the ``pytest_operator.subjects`` entry-point group as ``ratelimiter``.
The adapter (and its HTTP and Redis clients) loads on first use of ``subject``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subjects.ratelimiter.adapter import RateLimiterSubject

__all__ = ["subject"]


def __getattr__(name: str) -> RateLimiterSubject:
    if name == "subject":
        from subjects.ratelimiter.adapter import RateLimiterSubject

        value = RateLimiterSubject()
        globals()["subject"] = value  # built once; later lookups find it directly
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
