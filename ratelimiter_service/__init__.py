"""A distributed HTTP rate limiter whose nodes share their state in Redis.

Run a node::

    python -m ratelimiter_service --node-id node-1 --port 8001 \\
        --redis-url redis://127.0.0.1:6379/0

Every option is also an environment variable ``RL_<NAME>`` (``RL_REDIS_URL``...); the
flag wins. A bad value ends the process with one line naming the option, the value and
the valid values, and exit status 2. Nodes are served by uvicorn with uvloop and
httptools; any number of them can share one Redis.

Decisions. ``POST /check {"key": ..., "cost": 1}`` answers ``allowed``, ``limit``,
``remaining``, ``retry_after_ms``, ``node`` and ``mode`` with RateLimit-Limit,
RateLimit-Remaining and RateLimit-Reset headers (and Retry-After when denied). Each
decision is one atomic Lua script in Redis, loaded once and called by EVALSHA (loaded
again on NOSCRIPT). Concurrent checks on a node are coalesced: while one pipeline is in
flight the next calls queue and go out together in the next one.

Algorithms, chosen per key (``PUT /api/limits/{key}``; other keys use the node's
defaults):

- ``sliding_log``: exact. A sorted set of admitted requests (members unique even within
  one microsecond) and the sum of their costs; no window of the limit's length ever
  admits more than the limit.
- ``sliding_window``: the approximate two-counter estimate,
  ``previous * (window - elapsed) / window + current``. Cheap; may admit a little more or
  less than the limit when traffic is uneven between windows.
- ``fixed_window``: one counter per window. Admits up to twice the limit across a window
  edge (a full quota at the end of one window and another at the start of the next).
- ``gcra``: token bucket as GCRA: a bucket of ``limit`` tokens refilled at
  ``limit / window``; exact against its own model (in any interval of length t, at most
  ``limit + t * limit / window`` admitted).

Clocks (``--clock``). ``redis`` (the default): the scripts read Redis ``TIME``, one clock
for all nodes. ``node``: the node passes its own ``time.time()`` to the script, as many
real limiters do; a node whose clock is skewed then judges windows wrongly (a node 30 s
ahead sees every window as over and admits again). Nothing caches the clock, so
libfaketime skew on a node shows at once, in its decisions and in ``/healthz``.

Redis failures (``--policy``). Redis calls use short timeouts (``--redis-timeout-ms``,
100 ms) and no retries. On a failure the node turns ``degraded`` and stops calling Redis
for decisions: ``fail_open`` admits everything, ``fail_closed`` denies everything,
``local`` limits in-process with the same algorithm on the node's own clock (starting
from zero; each degraded node enforces the limit on its own, so N partitioned nodes can
together admit N times the limit). A probe (the heartbeat, every 100 ms while degraded)
brings the node back to ``normal`` as soon as Redis answers, without a restart.

Registry. Each node heartbeats into Redis (``--heartbeat-ms``): id, address, start time,
mode, and last seen by the Redis clock; ``GET /api/nodes`` shows every node Up or Down
(Down after 3 heartbeats + 250 ms of silence).

HTTP API: ``GET /healthz`` (alive, node clock), ``GET /readyz`` (Redis reachable: 200 or
503), ``GET /api/nodes``, ``GET /api/counters`` (configured and recently served keys;
the node's local view, ``source: local``, while degraded with policy ``local``),
``GET|PUT|DELETE /api/limits/{key}`` (GET and DELETE are 404 for a key without a
configured limit), ``POST /api/counters/{key}/reset``, ``GET /api/blocks`` (recent
denials), ``GET /metrics`` (Prometheus, ``ratelimiter_*``), ``GET /openapi.json`` (the
document of all of it, checked against the real node by schemathesis in the tests).
Mutations require ``Authorization: Bearer <token>`` when ``--token`` is set (401
without, 403 when wrong). A key is 1 to 256 characters, no control character. Bad input
gets 422 with ``{"error": message}``: a body over 4 KiB, an unknown field, a number out
of its bounds (the project's contract: bad input is 422, never 500); a cost over the
key's current limit is 409; a method the path does not have is 405 with ``Allow``.
"""

from __future__ import annotations

from ._algorithms import Decision, LocalLimiter
from ._config import Algorithm, ClockSource, Config, LimitSpec, Mode, Policy

__all__ = [
    "Algorithm",
    "ClockSource",
    "Config",
    "Decision",
    "LimitSpec",
    "LocalLimiter",
    "Mode",
    "Policy",
]
