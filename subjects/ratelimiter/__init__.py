"""The ratelimiter subject: a distributed rate limiter sharing state in Redis."""

from __future__ import annotations

subject = None  # replaced by the subject adapter (see the plugin issue)
