"""Shared by the report tests: one real scenario run with ``--alluredir`` (a pytest
subprocess against a real embedded cluster), reused by the result, report and
browser tests, and the tools they need."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
"""

SCENARIOS = """\
import pytest
from pytest_operator import FaultKind, RootCause, kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


@pytest.mark.chaos(kill("node-1"))
async def test_killed_node_is_diagnosed(operator, workload):
    await workload.start(steady(rate=50), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", component="node-1")
    await operator.assert_diagnosis(run)


@pytest.mark.chaos(kill("node-2"))
async def test_detection_deadline_missed(operator, workload):
    await workload.start(steady(rate=50), keys="k1")
    run = await operator.monitor(until="counter_drift", timeout=1.0)
    run.assert_detected("counter_drift", within=3.0)


async def test_overload_expected_but_not_seen(operator, workload):
    await workload.start(steady(rate=30), keys="k3")
    run = await operator.monitor(timeout=1.0)
    await operator.assert_diagnosis(run, expected=RootCause(FaultKind.OVERLOAD, "client"))


async def test_quiet_control(operator, workload):
    await workload.start(steady(rate=30), keys="k2")
    run = await operator.monitor(timeout=1.5)
    run.assert_no_violation()
    await operator.assert_no_fault_diagnosed(run)
"""

TRIALS = 2


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    results: Path
    stdout: str
    returncode: int


def run_group(
    cmd: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own process group, capturing its output; whatever happens, the
    whole group (a browser's helpers, a cluster's processes) is stopped after it."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[0]} took over {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> ScenarioRun:
    """Four small scenarios, two trials each, written as Allure results."""
    where = tmp_path_factory.mktemp("scenario-run")
    (where / "pytest.ini").write_text(INI)
    (where / "test_small_suite.py").write_text(textwrap.dedent(SCENARIOS))
    results = where / "allure-results"
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("GITHUB_ACTIONS", None)  # the executor must be the local one here
    proc = run_group(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--trials={TRIALS}",
            f"--alluredir={results}",
            "test_small_suite.py",
        ],
        cwd=where,
        env=env,
        timeout=300,
    )
    return ScenarioRun(results, proc.stdout + proc.stderr, proc.returncode)


def tool(name: str, *, install: str) -> str:
    """A tool from PATH or the project's .bin; fail (never skip) when ./dev should have
    installed it."""
    found = shutil.which(name) or (
        str(ROOT / ".bin" / name) if (ROOT / ".bin" / name).is_file() else None
    )
    if found is None:
        pytest.fail(f"{name} is not installed: {install}")
    return found


def allure_cli() -> Path:
    path = ROOT / "node_modules" / ".bin" / "allure"
    if not path.is_file():
        pytest.fail(f"the Allure 3 CLI is not installed at {path}: run ./dev setup")
    return path
