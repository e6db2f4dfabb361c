"""Process entry point: configuration, logging, uvicorn with uvloop and httptools."""

from __future__ import annotations

import logging
import sys

import uvicorn

from ._app import App
from ._config import from_process
from ._limiter import Limiter
from ._metrics import Metrics


def main() -> None:
    config = from_process()
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    limiter = Limiter(config, Metrics(config.node_id))
    server = uvicorn.Server(
        uvicorn.Config(
            App(limiter),
            host=config.host,
            port=config.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level=config.log_level,
            backlog=2048,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
        )
    )
    server.run()
