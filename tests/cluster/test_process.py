"""ManagedProcess, RunDirectory and the stale-run cleanup, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_operator._process import (
    ManagedProcess,
    ProcessError,
    RunDirectory,
    _proc_stat,
    cleanup_stale_runs,
    group_members,
    process_start_time,
)

# A parent that forks a grandchild and both sleep: stopping must reach both.
FAMILY = ["sh", "-c", "sleep 300 & echo child $!; sleep 300"]


def alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat.state != "Z"


def state(pid: int | None) -> str:
    stat = _proc_stat(pid) if pid is not None else None
    return "gone" if stat is None else stat.state


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDirectory:
    return RunDirectory.create(tmp_path)


async def test_stop_reaches_the_whole_group(run_dir: RunDirectory) -> None:
    proc = ManagedProcess("family", FAMILY, run_dir=run_dir)
    await proc.start()
    try:
        assert proc.pid is not None
        assert wait_until(lambda: len(group_members(proc.pid or 0, 0)) >= 2)
        members = group_members(proc.pid, 0)
        pid_line = run_dir.pidfile("family").read_text().split()
        assert pid_line == [str(proc.pid), str(process_start_time(proc.pid))]
    finally:
        await proc.stop(timeout=5)
    assert not proc.alive
    assert not any(alive(pid) for pid in members)
    assert not run_dir.pidfile("family").exists()
    await proc.stop()  # idempotent


async def test_stop_escalates_to_sigkill(run_dir: RunDirectory) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('u' + 'p', flush=True)\n"
        "time.sleep(300)",
    ]
    proc = ManagedProcess("stubborn", stubborn, run_dir=run_dir)
    await proc.start()
    assert wait_until(lambda: proc.log_tail().endswith("up"))
    began = time.monotonic()
    await proc.stop(timeout=0.5)
    assert not proc.alive
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - began >= 0.5


async def test_pause_resume_and_kill(run_dir: RunDirectory) -> None:
    proc = ManagedProcess("sleeper", ["sleep", "300"], run_dir=run_dir)
    await proc.start()
    try:
        assert proc.pid is not None
        proc.pause()
        assert wait_until(lambda: state(proc.pid) == "T")
        assert proc.paused
        proc.resume()
        assert wait_until(lambda: state(proc.pid) == "S")
        assert not proc.paused
        await proc.kill()
        assert not proc.alive
        assert proc.returncode == -signal.SIGKILL
        with pytest.raises(ProcessError, match=r"^cannot pause 'sleeper': not running$"):
            proc.pause()
        first = proc.pid
        await proc.restart()
        assert proc.alive and proc.pid != first and proc.starts == 2
    finally:
        await proc.stop()


async def test_wait_ready_fails_fast_with_the_log(run_dir: RunDirectory) -> None:
    argv = ["sh", "-c", "echo 'bad config: port'; exit 2"]
    proc = ManagedProcess("broken", argv, run_dir=run_dir)
    await proc.start()

    async def never() -> bool:
        return False

    with pytest.raises(ProcessError) as err:
        await proc.wait_ready(never, timeout=30)
    message = str(err.value)
    assert message.startswith("broken exited with status 2 before it was ready; log ")
    assert message.endswith("bad config: port")


async def test_wait_ready_times_out(run_dir: RunDirectory) -> None:
    proc = ManagedProcess("slow", ["sleep", "300"], run_dir=run_dir)
    await proc.start()
    try:

        async def never() -> bool:
            return False

        with pytest.raises(ProcessError, match=r"^slow \(pid \d+\) not ready after 0\.2s; log "):
            await proc.wait_ready(never, timeout=0.2)
    finally:
        await proc.stop()


async def test_start_of_a_missing_program_is_a_clear_error(run_dir: RunDirectory) -> None:
    proc = ManagedProcess("ghost", ["/nonexistent/ghost-server"], run_dir=run_dir)
    expected = r"^cannot start 'ghost' \(/nonexistent/ghost-server\): "
    with pytest.raises(ProcessError, match=expected):
        await proc.start()


def spawn_group(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, start_new_session=True)


def test_stale_run_of_a_dead_owner_is_cleaned(tmp_path: Path) -> None:
    """A run whose owner died: its recorded groups are killed and the directory removed."""
    stale = tmp_path / "run-stale"
    stale.mkdir()
    owner = subprocess.Popen(["true"])
    owner.wait()  # a PID that existed and is gone now
    (stale / "owner.run").write_text(f"{owner.pid} 1\n")
    orphan = spawn_group(["sleep", "300"])
    try:
        (stale / "node.pid").write_text(f"{orphan.pid} {process_start_time(orphan.pid)}\n")
        killed = cleanup_stale_runs(tmp_path)
        assert [r.pid for r in killed] == [orphan.pid]
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, signal.SIGKILL)
            orphan.wait()


def test_only_run_directories_are_cleaned(tmp_path: Path) -> None:
    """A folder that is not a run directory (a user's, or the cases a run writes) is
    never removed, however old and ownerless."""
    mine = tmp_path / "cases"
    mine.mkdir()
    (mine / "keep.json").write_text("{}")
    os.utime(mine, (0, 0))  # far older than the grace period of an ownerless run dir
    assert cleanup_stale_runs(tmp_path) == []
    assert (mine / "keep.json").exists()


def test_recycled_pid_is_never_killed(tmp_path: Path) -> None:
    """A pidfile whose PID now belongs to another process (other start time) is ignored."""
    stale = tmp_path / "run-stale"
    stale.mkdir()
    (stale / "owner.run").write_text("999999999 1\n")
    innocent = spawn_group(["sleep", "300"])
    try:
        start = process_start_time(innocent.pid)
        assert start is not None
        (stale / "node.pid").write_text(f"{innocent.pid} {start + 1}\n")
        assert cleanup_stale_runs(tmp_path) == []
        assert innocent.poll() is None
        assert not stale.exists()
    finally:
        os.killpg(innocent.pid, signal.SIGKILL)
        innocent.wait()


def test_run_of_a_live_owner_is_left_alone(tmp_path: Path) -> None:
    live = RunDirectory.create(tmp_path)
    other = RunDirectory.create(tmp_path)  # cleans up, and must not touch `live` (we live)
    assert live.path.is_dir() and other.path.is_dir() and live.path != other.path
