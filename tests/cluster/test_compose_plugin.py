"""``--cluster=compose`` through the plugin: a missing engine is a usage error that says how
to get one; a real scenario session runs its cluster in containers and leaves none; a
session interrupted with Ctrl-C inside a fault leaves none; one killed with kill -9 leaves
its containers running until the next session, which removes them and passes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_operator._containers import OWNER_LABEL, PROJECT_LABEL, RUN_LABEL, DockerApi
from pytest_operator._docker import DockerEngine
from tests.pytester_runs import INI, InnerSession

HOW = (
    "`./dev scenarios --cluster=compose` starts our own dockerd for the run (and builds the "
    "images), `./dev docker start` starts it until `./dev docker stop`; or set DOCKER_HOST "
    "to a running engine's unix socket"
)
RUN_S = 240.0  # an inner session on compose, on a loaded machine
SETTLE_S = 30.0

HEADER = """\
import asyncio, json, os
import pytest
from pytest_operator import kill, latency, pause, steady

pytestmark = pytest.mark.subject("ratelimiter")


def mark(cluster):
    info = {"project": cluster.project, "run_dir": str(cluster.run_dir.path)}
    tmp = os.environ["MARK"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.environ["MARK"])
"""

KILLED_NODE = """
@pytest.mark.chaos(kill("node-1"))
async def test_killed_node_is_diagnosed(cluster, operator, workload):
    mark(cluster)
    await workload.start(steady(rate=50), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=10.0)
    await operator.assert_diagnosis(run)
"""

IN_A_FAULT = """
@pytest.mark.chaos(latency("node-1", "redis", ms=400), pause("node-2"))
async def test_inside_a_fault(cluster, workload):
    await workload.start(steady(rate=20), keys="k1")
    mark(cluster)
    await asyncio.sleep(300)
"""


# --- a missing engine -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("docker_host", "says"),
    [
        (
            "",
            "no Docker engine answers on our own dockerd's socket {tmp}/engine/docker.sock: " + HOW,
        ),
        (
            "unix://{tmp}/docker.sock",
            "no Docker engine answers on DOCKER_HOST=unix://{tmp}/docker.sock: " + HOW,
        ),
        (
            "tcp://127.0.0.1:2375",
            "DOCKER_HOST=tcp://127.0.0.1:2375: the compose backend needs an engine on this "
            "machine, reached through its unix socket (the containers share this machine's "
            "network, where the tests reach them at 127.0.0.1): unix:///path/docker.sock",
        ),
        (
            "unix://{tmp}/engine.sock",
            "DOCKER_HOST=unix://{tmp}/engine.sock: the engine's socket must be named "
            "docker.sock (link it as one: ln -s {tmp}/engine.sock <dir>/docker.sock)",
        ),
    ],
)
def test_no_engine_is_a_usage_error_saying_how_to_get_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, docker_host: str, says: str
) -> None:
    tmp = str(pytester.path)
    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host.format(tmp=tmp))
    else:  # our own dockerd, at a root where none runs
        monkeypatch.delenv("DOCKER_HOST", raising=False)
        monkeypatch.setenv("PYTEST_OPERATOR_DOCKER_ROOT", f"{tmp}/engine")
    pytester.makeini(INI)
    pytester.makepyfile(
        test_scenario="""
        import pytest

        pytestmark = pytest.mark.subject("ratelimiter")

        async def test_needs_a_cluster(cluster):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cluster=compose")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line] == [
        f"ERROR: --cluster=compose: {says.format(tmp=tmp)}"
    ]


# --- real sessions ----------------------------------------------------------------------


class Session(InnerSession):
    """``pytest --cluster=compose`` on one scenario file, in a session of its own, with
    ``PYTEST_OPERATOR_RUN_DIR`` under ``where`` (its containers are labelled with it)."""

    WAIT_S = RUN_S

    def __init__(self, where: Path, engine: DockerEngine, name: str, body: str) -> None:
        (where / "pytest.ini").write_text(INI)
        super().__init__(
            where,
            where / "runs",
            name,
            HEADER + textwrap.dedent(body),
            args=("--cluster=compose", "--nodes=2"),
            env={"DOCKER_HOST": engine.host},
        )

    def wait_for_marker(self) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_S
        while not self.info():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the inner run never reached its body:\n{self.text()[-3000:]}")
            time.sleep(0.02)
        return self.info()


@contextlib.contextmanager
def inner_run(where: Path, engine: DockerEngine, name: str, body: str) -> Iterator[Session]:
    session = Session(where, engine, name, body)
    try:
        yield session
    finally:
        session.stop()


def containers_under(api: DockerApi, base: Path) -> list[dict[str, Any]]:
    """Every container whose run directory is under ``base``."""
    return [
        c
        for c in api.containers(RUN_LABEL)
        if str(c["Labels"].get(RUN_LABEL, "")).startswith(f"{base}/")
    ]


def settle(api: DockerApi, base: Path) -> list[str]:
    deadline = time.monotonic() + SETTLE_S
    while containers_under(api, base) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [str(c["Names"][0]) for c in containers_under(api, base)]


@pytest.fixture
def where(tmp_path: Path, api: DockerApi) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        for c in containers_under(api, tmp_path / "runs"):
            api.remove(str(c["Id"]))


@pytest.mark.slow
def test_a_scenario_session_runs_in_containers_and_leaves_none(
    where: Path, engine: DockerEngine, api: DockerApi
) -> None:
    with inner_run(where, engine, "kill", KILLED_NODE) as session:
        info = session.wait_for_marker()
        project = str(info["project"])
        running = api.containers(f"{PROJECT_LABEL}={project}")
        assert len(running) == 4  # Toxiproxy, Redis, 2 nodes
        owners = {c["Labels"][OWNER_LABEL].split()[0] for c in running}
        assert owners == {str(session.proc.pid)}
        # the session holds our dockerd (a lease), so no other session's end stops it
        leases = [p.name for p in (engine.root / "leases").iterdir()]
        assert [n for n in leases if n.startswith(f"{session.proc.pid}-")] != []
        code = session.wait()
        out = session.text()
    assert code == 0, out[-3000:]
    assert "1 passed" in out
    leases = [p.name for p in (engine.root / "leases").iterdir()]
    assert [n for n in leases if n.startswith(f"{session.proc.pid}-")] == []
    # the header names the backend and the engine
    assert "cluster=compose" in out
    assert f"operator: containers in the Docker engine at {engine.host}" in out
    assert settle(api, where / "runs") == []


@pytest.mark.slow
def test_ctrl_c_inside_a_fault_leaves_no_container(
    where: Path, engine: DockerEngine, api: DockerApi
) -> None:
    with inner_run(where, engine, "fault", IN_A_FAULT) as session:
        project = str(session.wait_for_marker()["project"])
        paused = api.inspect(f"{project}-node-2")
        assert paused is not None and paused["State"]["Paused"]
        os.killpg(session.proc.pid, signal.SIGINT)
        code = session.wait(60.0)
        out = session.text()
    assert code == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "KeyboardInterrupt" in out
    assert settle(api, where / "runs") == []


@pytest.mark.slow
def test_kill_9_of_pytest_is_cleaned_up_by_the_next_session(
    where: Path, engine: DockerEngine, api: DockerApi
) -> None:
    with inner_run(where, engine, "killed", IN_A_FAULT) as session:
        info = session.wait_for_marker()
        session.proc.send_signal(signal.SIGKILL)  # pytest alone, as kill -9 does
        session.wait(30.0)
    project = str(info["project"])
    time.sleep(1.0)
    left = api.containers(f"{PROJECT_LABEL}={project}")
    states = {c["Labels"]["pytest-operator.component"]: c["State"] for c in left}
    assert states == {
        "toxiproxy": "running",
        "redis": "running",
        "node-1": "running",
        "node-2": "paused",  # the fault's pause: nobody healed it
    }
    assert Path(info["run_dir"]).is_dir()
    with inner_run(where, engine, "next", KILLED_NODE) as session:
        code = session.wait()
        out = session.text()
    assert code == 0, out[-3000:]
    assert api.containers(f"{PROJECT_LABEL}={project}") == []
    assert not Path(info["run_dir"]).exists()
    assert settle(api, where / "runs") == []
