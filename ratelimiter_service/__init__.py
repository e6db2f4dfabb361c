"""A distributed HTTP rate limiter whose nodes share their state in Redis.

(Full description below, written with the rest of the service.)
"""

from __future__ import annotations

from ._config import Algorithm, ClockSource, Config, LimitSpec, Mode, Policy

__all__ = ["Algorithm", "ClockSource", "Config", "LimitSpec", "Mode", "Policy"]
