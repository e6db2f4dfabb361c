"""No orphan process and no listening port after a normal end, a failing body, Ctrl-C, and
(after the next start's cleanup) a kill -9 of the driving process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_operator._process import RunDirectory, port_is_open, process_start_time

DRIVER = Path(__file__).with_name("orphan_driver.py")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    proc: subprocess.Popen[str]
    pids: dict[str, int]
    ports: list[int]
    run_dir: Path
    start_times: dict[str, int | None]

    def survivors(self) -> list[str]:
        """Names whose process is still the one we started (same PID and start time)."""
        return [
            name
            for name, pid in self.pids.items()
            if process_start_time(pid) is not None
            and process_start_time(pid) == self.start_times[name]
        ]

    def open_ports(self) -> list[int]:
        return [p for p in self.ports if port_is_open(p)]

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until the processes and ports are gone (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.survivors() or self.open_ports()):
            time.sleep(0.05)


def launch(base: Path, mode: str) -> Run:
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(base), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"driver failed: {err}")
    info = json.loads(line)
    pids = {k: int(v) for k, v in info["pids"].items()}
    starts = {k: process_start_time(v) for k, v in pids.items()}
    return Run(proc, pids, info["ports"], Path(info["run_dir"]), starts)


def check_up(run: Run) -> None:
    """Before the end: every process runs and every port listens (so the test can fail)."""
    assert sorted(run.survivors()) == ["redis", "toxiproxy", "web-1", "web-2"]
    assert run.open_ports() == run.ports


def finish(run: Run, timeout: float = 30, go: bool = False) -> tuple[int, str]:
    try:
        _, err = run.proc.communicate("go\n" if go else None, timeout=timeout)
    finally:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
    return run.proc.returncode, err


def kill_leftovers(run: Run) -> None:
    for name in run.survivors():
        os.killpg(run.pids[name], signal.SIGKILL)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_normal_end(base: Path) -> None:
    run = launch(base, "normal")
    try:
        check_up(run)
        assert finish(run, go=True)[0] == 0
        assert (run.survivors(), run.open_ports()) == ([], [])
    finally:
        kill_leftovers(run)


def test_failing_body(base: Path) -> None:
    run = launch(base, "raise")
    try:
        check_up(run)
        code, err = finish(run, go=True)
        assert code == 1
        assert "RuntimeError: the test failed" in err
        assert (run.survivors(), run.open_ports()) == ([], [])
    finally:
        kill_leftovers(run)


def test_ctrl_c(base: Path) -> None:
    run = launch(base, "hang")
    try:
        check_up(run)
        run.proc.send_signal(signal.SIGINT)
        code, err = finish(run)
        assert code != 0
        assert "KeyboardInterrupt" in err
        assert (run.survivors(), run.open_ports()) == ([], [])
    finally:
        kill_leftovers(run)


def test_kill_9_is_cleaned_by_the_next_start(base: Path) -> None:
    run = launch(base, "hang")
    try:
        check_up(run)
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=10)
        finish(run)
        time.sleep(0.5)
        # Nobody stopped them: the cluster's processes outlive their driver...
        assert sorted(run.survivors()) == ["redis", "toxiproxy", "web-1", "web-2"]
        assert run.run_dir.is_dir()
        # ...until the next start cleans the stale run directory up.
        fresh = RunDirectory.create(base)
        run.settle()
        assert (run.survivors(), run.open_ports()) == ([], [])
        assert not run.run_dir.exists()
        assert fresh.path.is_dir()
    finally:
        kill_leftovers(run)


def test_failing_pytest_test(pytester: pytest.Pytester, base: Path) -> None:
    """A real pytest run whose test fails while the cluster (a fixture) is up."""
    info = pytester.path / "info.json"
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = module\n"
        "asyncio_default_test_loop_scope = module\n"
    )
    pytester.makepyfile(
        f"""
        import json, sys
        import pytest
        sys.path.insert(0, {str(ROOT)!r})
        from pytest_operator._cluster import EmbeddedCluster
        from tests.cluster.conftest import standin_spec
        from tests.cluster.orphan_driver import describe

        @pytest.fixture(scope="module")
        async def cluster():
            async with EmbeddedCluster(standin_spec(2), base_dir={str(base)!r}) as c:
                yield c

        async def test_fails(cluster):
            open({str(info)!r}, "w").write(describe(cluster))
            assert False, "the scenario failed"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the scenario failed*"])
    data = json.loads(info.read_text())
    pids = {k: int(v) for k, v in data["pids"].items()}
    assert pids and all(process_start_time(pid) is None for pid in pids.values())
    assert not [p for p in data["ports"] if port_is_open(p)]


def test_ctrl_c_during_a_pytest_run(pytester: pytest.Pytester, base: Path) -> None:
    """Ctrl-C while a scenario runs with a module-scoped cluster fixture."""
    info = pytester.path / "info.json"
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = module\n"
        "asyncio_default_test_loop_scope = module\n"
    )
    test_file = pytester.makepyfile(
        f"""
        import asyncio, sys
        import pytest
        sys.path.insert(0, {str(ROOT)!r})
        from pytest_operator._cluster import EmbeddedCluster
        from tests.cluster.conftest import standin_spec
        from tests.cluster.orphan_driver import describe

        @pytest.fixture(scope="module")
        async def cluster():
            async with EmbeddedCluster(standin_spec(2), base_dir={str(base)!r}) as c:
                yield c

        async def test_long(cluster):
            open({str(info)!r}, "w").write(describe(cluster))
            await asyncio.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (info.exists() and info.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the inner run never started its cluster"
            time.sleep(0.05)
        if not info.exists():
            out, _ = proc.communicate(timeout=30)
            raise AssertionError(f"the inner run ended ({proc.returncode}) before its test:\n{out}")
        data = json.loads(info.read_text())
        pids = {k: int(v) for k, v in data["pids"].items()}
        assert all(process_start_time(pid) is not None for pid in pids.values())
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert "KeyboardInterrupt" in out
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            process_start_time(pid) is not None for pid in pids.values()
        ):
            time.sleep(0.05)
        assert {k for k, pid in pids.items() if process_start_time(pid) is not None} == set()
        assert [p for p in data["ports"] if port_is_open(p)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()  # on every path, or a later test fails on its ResourceWarning
