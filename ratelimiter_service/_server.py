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
"""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from ._app import App
from ._config import from_process
from ._http import CoalescingHttpToolsProtocol
from ._limiter import Limiter
from ._metrics import Metrics

GC_THRESHOLDS = (20_000, 20, 20)


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
        timeout_graceful_shutdown=2,
    )
    uvicorn_config.load()
    server = uvicorn.Server(uvicorn_config)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    server.run()
