"""``./dev docker``: our own Docker engine and the project's images, for a person.

python -m pytest_operator._dockerctl start       start dockerd (kept running) and build
                                                 the images; prints the DOCKER_HOST line
python -m pytest_operator._dockerctl images      build what changed (the engine must run)
python -m pytest_operator._dockerctl stop        stop that dockerd (and clean what it left)
python -m pytest_operator._dockerctl env         the export line for a shell
python -m pytest_operator._dockerctl compose ARGS
                                                 compose v2 against that dockerd, in the
                                                 project folder (its docker-compose.yml)
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_operator._docker import DockerEngine, DockerError, compose_command
from pytest_operator._images import ensure_images

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _say(message: str) -> None:
    print(f"[docker] {message}", file=sys.stderr, flush=True)


def _images(engine: DockerEngine) -> None:
    started = time.monotonic()
    images = ensure_images(engine, say=_say)
    for image in (images.base, *images.images):
        how = f"built in {image.seconds:.1f} s" if image.built else "up to date"
        _say(f"{image.ref} ({how})")
    _say(f"images ready in {time.monotonic() - started:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "start"
    engine = DockerEngine()
    export = f"export DOCKER_HOST={shlex.quote(engine.host)}"
    try:
        if command == "start":
            started = time.monotonic()
            if engine.start():
                _say(f"dockerd started in {time.monotonic() - started:.1f} s (PID {engine.pid()})")
            else:
                _say(f"dockerd already runs on {engine.socket}")
            _images(engine)
            _say(f"to use it from a shell: {export}")
        elif command == "images":
            _images(engine)
        elif command == "stop":
            _say("dockerd stopped" if engine.stop() else "no dockerd was running")
        elif command == "env":
            print(export)
        elif command == "compose":
            os.chdir(_PROJECT_ROOT)
            argv_ = [*compose_command(), *args]
            os.execvpe(argv_[0], argv_, engine.env())
        else:
            _say(f"unknown command {command!r} (valid: start, images, stop, env, compose)")
            return 2
    except DockerError as error:
        _say(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
