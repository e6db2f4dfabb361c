"""The Docker tests' shared engine and images.

``engine``: our own dockerd at the default root (``~/.cache/pytest-operator/docker``), held
by a lease for the session: a daemon this session started stops at its end (and the
fixture checks that nothing is left), one a person started with ``./dev docker start``
keeps running. ``images``: the project's images (docker/images.toml), built on the first
run (about two minutes cold, the base's debootstrap included) and cached after.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_operator._docker import DockerEngine, mounts_under, remove_tree
from pytest_operator._images import Images, ensure_images


def _say(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[docker] {message}")


@pytest.fixture(scope="session")
def engine(pytestconfig: pytest.Config) -> Iterator[DockerEngine]:
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root (these tests start their own engine): run as root")
    engine = DockerEngine()
    with engine.lease():
        yield engine
    if not engine.running():  # this session held the last lease: the daemon is gone
        assert engine.pid() is None
        assert engine.leftovers() == []
        assert mounts_under(engine.root) == []


@pytest.fixture(scope="session")
def images(engine: DockerEngine, pytestconfig: pytest.Config) -> Images:
    started = time.monotonic()
    built = ensure_images(engine, say=lambda m: _say(pytestconfig, m))
    if any(i.built for i in (built.base, *built.images)):
        _say(pytestconfig, f"images ready in {time.monotonic() - started:.1f} s")
    return built


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A fresh engine root with a short path (containerd's sockets live under the exec
    root, and a unix socket path has at most 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))
    try:
        yield root
    finally:
        engine = DockerEngine(root)
        engine.stop()  # by the root's pidfile: only a daemon a test left behind
        remove_tree(root)  # refuses while anything is still mounted under it
