"""The project's images: cached by a hash of their context, and able to run the command lines
a cluster spec builds on the host (host paths of programs included), the node's clock
skewed through libfaketime and a clock file in a bind-mounted directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_operator._binaries import find_toxiproxy_server
from pytest_operator._docker import DockerEngine
from pytest_operator._images import Images, context_hash, ensure_images

pytestmark = pytest.mark.slow

LIBFAKETIME = "/usr/local/lib/faketime/libfaketime.so.1"  # the node image's stable path


def _run(engine: DockerEngine, image: str, *argv: str, options: tuple[str, ...] = ()) -> str:
    done = engine.docker("run", "--rm", "--network", "host", *options, image, *argv, timeout=120)
    return done.stdout


def test_unchanged_images_are_not_rebuilt(engine: DockerEngine, images: Images) -> None:
    started = time.monotonic()
    again = ensure_images(engine)
    elapsed = time.monotonic() - started
    assert not again.base.built and not any(i.built for i in again.images)
    assert again.base.ref == images.base.ref
    assert [i.ref for i in again.images] == [i.ref for i in images.images]
    assert elapsed < 15.0, f"checking cached images took {elapsed:.1f} s"
    listed = engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    for image in images.images:
        assert image.ref in listed and f"{image.repository}:latest" in listed


def test_a_context_hash_covers_paths_content_and_the_executable_bit(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "app").mkdir()
    script = tmp_path / "app" / "run.sh"
    script.write_text("echo one\n")
    first = context_hash(tmp_path, ["BASE=b:1"])
    assert context_hash(tmp_path, ["BASE=b:1"]) == first
    assert context_hash(tmp_path, ["BASE=b:2"]) != first
    script.chmod(0o755)
    executable = context_hash(tmp_path, ["BASE=b:1"])
    assert executable != first
    script.write_text("echo two\n")
    assert context_hash(tmp_path, ["BASE=b:1"]) not in (first, executable)
    script.rename(tmp_path / "app" / "other.sh")
    assert context_hash(tmp_path, ["BASE=b:1"]) not in (first, executable)


def test_the_node_image_runs_the_host_command_line(engine: DockerEngine, images: Images) -> None:
    # the spec's command starts with the host venv's python: the image runs its own
    code = (
        "import sys, ratelimiter_service, fastapi, uvicorn, uvloop, httptools, redis, hiredis,"
        " prometheus_client; print(sys.version_info[:2], ratelimiter_service.__file__)"
    )
    out = _run(engine, images.ref("ratelimiter-node"), sys.executable, "-c", code)
    assert "(3, 11) /opt/app/ratelimiter_service/__init__.py" in out
    usage = _run(
        engine, images.ref("ratelimiter-node"), "python", "-m", "ratelimiter_service", "-h"
    )
    assert "--redis-url" in usage


def test_the_node_image_skews_its_clock_from_a_file_in_a_mounted_directory(
    engine: DockerEngine, images: Images, tmp_path: Path
) -> None:
    clock = tmp_path / "node-1.faketime"
    clock.write_text("+3600\n")
    # prints the wall clock, waits 1.5 s of monotonic time (not faked), prints it again
    code = (
        "import time\n"
        "print(time.time(), flush=True)\n"
        "start = time.monotonic()\n"
        "while time.monotonic() - start < 1.5: pass\n"
        "print(time.time(), flush=True)\n"
    )
    options = (
        "-v",
        f"{tmp_path}:{tmp_path}",
        "-e",
        f"LD_PRELOAD={LIBFAKETIME}",
        "-e",
        f"FAKETIME_TIMESTAMP_FILE={clock}",
        "-e",
        "FAKETIME_NO_CACHE=1",
        "-e",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
    )
    argv = [*engine.docker_argv(), "run", "--rm", "--network", "host", *options]
    argv += [images.ref("ratelimiter-node"), "python", "-c", code]
    with subprocess.Popen(argv, env=engine.env(), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = float(proc.stdout.readline())
        # as the embedded backend does: a new file renamed over the old (a new inode, which
        # a bind mount of the file itself would not show; the directory's mount does)
        tmp = clock.with_name(".tmp")
        tmp.write_text("-60\n")
        os.replace(tmp, clock)
        second = float(proc.stdout.readline())
        assert proc.wait(timeout=60) == 0
    now = time.time()
    assert abs(first - now - 3600) < 30, (first, now)
    assert abs(second - now + 60) < 30, (second, now)


def test_the_programs_of_the_other_images(engine: DockerEngine, images: Images) -> None:
    # host paths as a spec builds them (the project's .bin, Debian's /usr/bin)
    toxiproxy = _run(engine, images.ref("toxiproxy"), str(find_toxiproxy_server()), "-version")
    assert "toxiproxy-server version" in toxiproxy
    redis = _run(engine, images.ref("redis"), "redis-server", "--version")
    assert redis.startswith("Redis server v=7.")
    prometheus = _run(engine, images.ref("prometheus"), "/usr/bin/prometheus", "--version")
    assert prometheus.startswith("prometheus, version 2.")


def test_a_program_missing_from_an_image_is_named(engine: DockerEngine, images: Images) -> None:
    done = engine.docker(
        "run", "--rm", images.ref("redis"), "/opt/host/bin/no-such-program", check=False
    )
    assert done.returncode == 127
    assert "/opt/host/bin/no-such-program is not in this image and no no-such-program" in (
        done.stderr
    )
