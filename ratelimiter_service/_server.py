"""Process entry point: configuration, logging, uvicorn with uvloop and httptools.

Tuned for the /check hot path (issue 2's benchmark):

- responses go out in one write (``CoalescingHttpToolsProtocol``, still uvicorn's
  httptools protocol);
- no proxy-headers middleware (a node is reached directly; it would add one coroutine
  layer to every request) and no ``server`` header;
- the garbage collector: everything built at start-up (FastAPI, pydantic, the modules)
  is frozen out of the collector's view, and the youngest generation is collected less
  often. A full collection over those ~70k start-up objects took 50-150 ms on a busy
  2-core machine, a pause every request in flight waited for (the p99); per-request
  garbage is freed by reference counting, only in-flight requests survive a collection.

Stopping. SIGTERM (or SIGINT) starts uvicorn's graceful shutdown: no new connections,
idle ones closed, requests in flight get ``GRACEFUL_S`` to finish, then the limiter
stops (bounded too, see ``Limiter.stop``). The whole stop has ``SHUTDOWN_DEADLINE_S``:
a kernel timer armed by the first signal ends the process if anything still hangs, with
an error in the log instead of a silent SIGKILL from the harness (3 s).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from ._app import App
from ._config import from_process
from ._http import CoalescingHttpToolsProtocol
from ._limiter import Limiter
from ._metrics import Metrics

GC_THRESHOLDS = (20_000, 20, 20)
GRACEFUL_S = 1
SHUTDOWN_DEADLINE_S = 2.0
OVERDUE_EXIT_STATUS = 70  # EX_SOFTWARE

log = logging.getLogger("ratelimiter_service")


def _overdue(sig: int, frame: FrameType | None) -> None:
    log.error("shutdown took more than %.1f s: exiting now", SHUTDOWN_DEADLINE_S)
    logging.shutdown()
    os._exit(OVERDUE_EXIT_STATUS)


class _Server(uvicorn.Server):
    """uvicorn's server with a deadline on the whole stop (see the module docstring)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            # ITIMER_REAL is the kernel's: it fires even if the event loop is stuck, and
            # libfaketime (which wraps alarm() and timer_settime()) leaves setitimer alone
            signal.signal(signal.SIGALRM, _overdue)
            signal.setitimer(signal.ITIMER_REAL, SHUTDOWN_DEADLINE_S)
        super().handle_exit(sig, frame)


def main() -> None:
    config = from_process()
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    limiter = Limiter(config, Metrics(config.node_id))
    uvicorn_config = uvicorn.Config(
        App(limiter),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level=config.log_level,
        backlog=2048,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    uvicorn_config.load()
    server = _Server(uvicorn_config)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    server.run()
