"""A real pytest session on the ratelimiter subject, interrupted at precise points, leaves
nothing behind: no process, no listening port, no pidfile, and nothing that makes the next
run in the same ``PYTEST_OPERATOR_RUN_DIR`` fail.

Each test starts ``python -m pytest`` on small scenario files written here, in a session of
its own (stopped by its process group in a ``finally``), waits for a precise moment (node
pidfiles written but the cluster not ready; a toxic in Toxiproxy and a node stopped with
SIGSTOP; a killed node being restarted by the fault's heal in teardown) and sends SIGINT to
the session's process group, as a terminal's Ctrl-C does, or SIGKILL to pytest alone. Then:
every process of the run is gone (any process whose environment, command line or working
directory points into the test's run base), every port those processes listened on is
closed, and a next, healthy run in the same base passes and removes the interrupted run's
directory. tests/cluster/test_orphans.py covers the cluster driven without pytest (and one
Ctrl-C in a pytest run with a hand-made cluster fixture); this module drives the plugin's
own fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.pytester_runs import INI, InnerSession

pytestmark = pytest.mark.slow

NODES = ("node-1", "node-2")  # --nodes=2: a smaller real cluster starts faster
SETUP_S = 90.0  # an inner run reaching its marker (cluster start on a loaded machine)
EXIT_S = 30.0  # an interrupted run exiting
SETTLE_S = 15.0  # the run's processes gone after it exited
NEXT_RUN_S = 120.0

# The test body is reached only once the cluster is ready and the marked faults are in.
# MARK names a JSON file the body writes: the Toxiproxy API and node-1's PID at that moment.
HEADER = """\
import asyncio, json, os
import pytest
from pytest_operator import kill, latency, pause, steady

pytestmark = pytest.mark.subject("ratelimiter")


def mark(cluster):
    info = {"toxiproxy": cluster.toxiproxy.base_url, "node-1": cluster.process("node-1").pid}
    tmp = os.environ["MARK"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.environ["MARK"])
"""

IN_A_FAULT = """
@pytest.mark.chaos(latency("node-1", "redis", ms=400), pause("node-2"))
async def test_inside_a_fault(cluster, workload):
    await workload.start(steady(rate=20), keys="k1")
    mark(cluster)
    await asyncio.sleep(120)
"""

# The body ends at once; the teardown heals the kill by starting node-1 again and waiting
# until it is ready, which takes a node's start-up time: the window the tests aim at.
KILLED_NODE = """
@pytest.mark.chaos(kill("node-1"))
async def test_killed_node(cluster, workload):
    await workload.start(steady(rate=20), keys="k1")
    mark(cluster)
"""

# Redis runs a script that never ends, so it cannot act on the SIGTERM of the cluster's
# stop: the stop waits for it (its stop_timeout) before a SIGKILL, the window aimed at.
BUSY_STORE = """
async def test_busy_store(cluster):
    reader, writer = await asyncio.open_connection("127.0.0.1", cluster.address("redis").port)
    writer.write(b'EVAL "while true do end" 0\\r\\n')
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    mark(cluster)
"""

HEALTHY = """
async def test_next_run_starts_clean(cluster, operator, workload):
    mark(cluster)
    proxies = await cluster.toxiproxy.proxies()
    assert proxies and all(p.enabled and not p.toxics for p in proxies.values())
    await workload.start(steady(rate=20), keys="k1")
    run = await operator.monitor(timeout=1.0)
    run.assert_no_violation()
"""


# --- what a run leaves behind -----------------------------------------------------------


def _state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[0]


def processes_of(base: Path) -> set[int]:
    """Live processes (not zombies) whose environment, command line or working directory
    points into ``base``: every process an inner run started inherits
    ``PYTEST_OPERATOR_RUN_DIR=base``, and runs in (or is given) a directory under it."""
    needle = str(base).encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        except OSError:
            continue
        if (needle in environ or needle in cmdline or cwd.startswith(needle)) and _state(
            pid
        ) not in (None, "Z"):
            found.add(pid)
    return found


def _listening() -> dict[str, int]:
    """Socket inode -> port of every listening TCP socket (IPv4 and IPv6)."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    sockets[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return sockets


def listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports the given processes listen on."""
    sockets = _listening()
    ports = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:[") and link[8:-1] in sockets:
                        ports.add(sockets[link[8:-1]])
    return ports


def still_listening(ports: set[int]) -> set[int]:
    return ports & set(_listening().values())


@dataclass(frozen=True)
class Snapshot:
    """The run's processes and their listening ports at one moment."""

    pids: set[int]
    ports: set[int]


# --- one inner pytest session -----------------------------------------------------------


@dataclass(frozen=True)
class Interrupted:
    """How an interrupted run ended: exit code, seconds to exit, output, run directory."""

    code: int
    took: float
    out: str
    run_dir: Path | None


class Session(InnerSession):
    """The inner run of a scenario file written for the test (``HEADER`` + its body)."""

    WAIT_S = EXIT_S

    def __init__(self, where: Path, base: Path, name: str, body: str) -> None:
        source = HEADER + textwrap.dedent(body)
        super().__init__(where, base, name, source, args=(f"--nodes={len(NODES)}",))

    def run_dir(self) -> Path | None:
        """This session's run directory (the owner's PID is in its name)."""
        found = sorted(self.base.glob(f"run-*-{self.proc.pid}-*"))
        return found[0] if found else None

    def pidfile(self, name: str) -> str:
        run_dir = self.run_dir()
        if run_dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (run_dir / f"{name}.pid").read_text()
        return ""

    def wait_for(
        self, condition: Callable[[], object], what: str, timeout: float = SETUP_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the inner run ended before {what}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the inner run never reached {what}:\n{self.text()[-3000:]}")
            time.sleep(0.005)

    def snapshot(self) -> Snapshot:
        pids = processes_of(self.base)
        return Snapshot(pids, listening_ports(pids))

    def ctrl_c(self) -> None:
        """SIGINT to the session's process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def interrupt(self, send: Callable[[], None] | None = None) -> Interrupted:
        """Interrupt the run (Ctrl-C unless ``send`` says otherwise), wait for its exit."""
        (send or self.ctrl_c)()
        began = time.monotonic()
        code = self.wait()
        return Interrupted(code, time.monotonic() - began, self.text(), self.run_dir())


def kill_leftovers(base: Path) -> None:
    """After a failed test: SIGKILL the process group of whatever the run left."""
    for pid in processes_of(base):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


@contextlib.contextmanager
def inner_run(where: Path, base: Path, name: str, body: str) -> Iterator[Session]:
    session = Session(where, base, name, body)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def where(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "pytest.ini").write_text(INI)
    try:
        yield tmp_path
    finally:
        kill_leftovers(tmp_path / "runs")


@pytest.fixture
def base(where: Path) -> Path:
    return where / "runs"


def assert_nothing_left(base: Path, before: Snapshot) -> None:
    """No process of the run, none of its ports listening, no pidfile in ``base``."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and (processes_of(base) or still_listening(before.ports)):
        time.sleep(0.05)
    left = {}
    for pid in processes_of(base):
        with contextlib.suppress(OSError):
            left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()[:120]
    assert left == {}, "processes of the interrupted run are still alive"
    assert still_listening(before.ports) == set()
    assert sorted(p.name for p in base.glob("*/*.pid")) == []


def assert_next_run_passes(where: Path, base: Path, interrupted: Path | None) -> None:
    """A healthy scenario in the same base passes, and its start removed the old run."""
    with inner_run(where, base, "next", HEALTHY) as session:
        code = session.wait(NEXT_RUN_S)
        out = session.text()
        assert code == 0, out[-3000:]
        assert "1 passed" in out
        fresh = session.run_dir()
    assert fresh is not None and fresh.is_dir()
    assert interrupted is None or not interrupted.exists()
    assert sorted(base.iterdir()) == [fresh]
    assert sorted(fresh.glob("*.pid")) == []  # its own stop left no pidfile either
    assert processes_of(base) == set()


def up(before: Snapshot) -> None:
    """The snapshot holds what the checks need, so they can fail: pytest, toxiproxy, redis
    and the nodes alive; toxiproxy listening on its API port and one proxy per link (the
    proxies exist before any node starts)."""
    assert len(before.pids) >= 3 + len(NODES), before
    assert len(before.ports) >= 1 + 2 * len(NODES), before


# --- the tests --------------------------------------------------------------------------


def _nodes_started(session: Session) -> Callable[[], bool]:
    """True once every node's process is started (its pidfile written)."""
    return lambda: all(session.pidfile(n) for n in NODES)


def assert_stopped_cleanly(
    ended: Interrupted,
    where: Path,
    base: Path,
    before: Snapshot,
    *,
    said: str = "KeyboardInterrupt",
) -> None:
    """The run exited as interrupted, soon, saying why; it left nothing behind; and the
    next run in the same base passes."""
    assert ended.code == pytest.ExitCode.INTERRUPTED, ended.out[-3000:]
    assert said in ended.out
    assert ended.took < EXIT_S
    assert_nothing_left(base, before)
    assert ended.run_dir is not None and not list(ended.run_dir.glob("*.pid"))
    assert_next_run_passes(where, base, ended.run_dir)


def test_ctrl_c_during_cluster_setup(where: Path, base: Path) -> None:
    """Ctrl-C once every node's process is started but before the cluster is ready."""
    with inner_run(where, base, "setup", HEALTHY) as session:
        session.wait_for(_nodes_started(session), "the nodes' pidfiles")
        before = session.snapshot()
        ended = session.interrupt()
    up(before)
    assert not session.marker.exists()  # the body never began: it was the set-up
    assert_stopped_cleanly(ended, where, base, before)


def test_ctrl_c_inside_a_toxic_and_a_paused_node(where: Path, base: Path) -> None:
    """Ctrl-C while a latency toxic sits on node-1 -> redis and node-2 is SIGSTOPped."""
    with inner_run(where, base, "fault", IN_A_FAULT) as session:
        session.wait_for(session.info, "the scenario's body")
        api = str(session.info()["toxiproxy"])
        toxics = httpx.get(f"{api}/proxies/node-1-%3Eredis/toxics", timeout=5).json()
        assert [t["name"] for t in toxics] == ["chaos-latency-downstream"]
        node_2 = int(session.pidfile("node-2").split()[0])
        assert _state(node_2) == "T"  # stopped
        before = session.snapshot()
        ended = session.interrupt()
    up(before)
    api_port = int(api.rsplit(":", 1)[1])
    assert api_port in before.ports
    assert_stopped_cleanly(ended, where, base, before)


def test_sigterm_inside_a_fault_stops_everything_like_ctrl_c(where: Path, base: Path) -> None:
    """SIGTERM to pytest alone (a CI job's timeout) while a toxic is on and a node is
    frozen: the plugin turns it into an interrupt, so faults heal and the cluster stops
    now, not at the next run's stale-run cleanup."""
    with inner_run(where, base, "sigterm", IN_A_FAULT) as session:
        session.wait_for(session.info, "the scenario's body")
        before = session.snapshot()
        ended = session.interrupt(lambda: os.kill(session.proc.pid, signal.SIGTERM))
    up(before)
    assert_stopped_cleanly(ended, where, base, before, said="terminated by signal 15 (SIGTERM)")


def test_ctrl_c_while_the_cluster_stops(where: Path, base: Path) -> None:
    """Ctrl-C inside the cluster's stop: the nodes are stopped, Redis is being waited for."""
    with inner_run(where, base, "stopping", BUSY_STORE) as session:
        session.wait_for(session.info, "the scenario's body")
        session.wait_for(lambda: not any(session.pidfile(n) for n in NODES), "the nodes' stop")
        before = session.snapshot()
        assert session.pidfile("redis") and session.pidfile("toxiproxy")
        ended = session.interrupt()
    # pytest, redis and toxiproxy (API port, redis, the proxies)
    assert len(before.pids) >= 3 and len(before.ports) >= 2 + 2 * len(NODES), before
    assert_stopped_cleanly(ended, where, base, before)


def _heal_restarts_node_1(session: Session) -> Callable[[], bool]:
    """True once node-1's pidfile names a process other than the one the fault killed."""

    def restarted() -> bool:
        killed = session.info().get("node-1")
        now = session.pidfile("node-1").split()
        return killed is not None and bool(now) and int(now[0]) != killed

    return restarted


def test_ctrl_c_during_teardown(where: Path, base: Path) -> None:
    """Ctrl-C while the teardown heals a killed node (starting it again)."""
    with inner_run(where, base, "teardown", KILLED_NODE) as session:
        session.wait_for(_heal_restarts_node_1(session), "the heal's restart of node-1")
        before = session.snapshot()
        ended = session.interrupt()
    up(before)
    assert_stopped_cleanly(ended, where, base, before)


@dataclass(frozen=True)
class Moment:
    body: str
    reached: Callable[[Session], Callable[[], bool]]
    what: str


MOMENTS = {
    "setup": Moment(HEALTHY, _nodes_started, "the nodes' pidfiles"),
    "teardown": Moment(KILLED_NODE, _heal_restarts_node_1, "the heal's restart of node-1"),
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_ctrl_c_mashed(where: Path, base: Path, moment: str) -> None:
    """Ctrl-C pressed over and over (every few ms) from the moment until pytest has
    exited: every path that cleans up is itself interrupted, the last-resort one (the
    atexit hook) included."""
    at = MOMENTS[moment]
    with inner_run(where, base, "mashed", at.body) as session:
        session.wait_for(at.reached(session), at.what)
        before = session.snapshot()
        began = time.monotonic()
        presses = 0
        while session.proc.poll() is None and time.monotonic() - began < EXIT_S:
            with contextlib.suppress(ProcessLookupError):
                session.ctrl_c()
                presses += 1
            time.sleep(0.003)
        code = session.wait()
        out = session.text()
        interrupted = session.run_dir()
    up(before)
    assert presses > 1
    # A Ctrl-C that escapes pytest's own handling ends the interpreter by SIGINT.
    assert code in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), out[-3000:]
    assert "KeyboardInterrupt" in out
    assert_nothing_left(base, before)
    assert_next_run_passes(where, base, interrupted)


def test_kill_9_inside_a_fault_is_cleaned_by_the_next_run(where: Path, base: Path) -> None:
    """SIGKILL of pytest while the toxic is in and node-2 is stopped: nothing can clean up
    then, so everything survives; the next run's start kills it all and passes."""
    with inner_run(where, base, "killed", IN_A_FAULT) as session:
        session.wait_for(session.info, "the scenario's body")
        api = str(session.info()["toxiproxy"])
        node_2 = int(session.pidfile("node-2").split()[0])
        before = session.snapshot()
        os.kill(session.proc.pid, signal.SIGKILL)
        session.wait(10)
        interrupted = session.run_dir()
        assert interrupted is not None
    up(before)
    time.sleep(0.5)
    # Nobody stopped them: the cluster outlives its pytest, fault and all.
    assert processes_of(base) == before.pids - {session.proc.pid}
    assert still_listening(before.ports) == before.ports
    toxics = httpx.get(f"{api}/proxies/node-1-%3Eredis/toxics", timeout=5).json()
    assert [t["name"] for t in toxics] == ["chaos-latency-downstream"]
    assert _state(node_2) == "T"
    assert sorted(p.stem for p in interrupted.glob("*.pid")) == sorted(
        ["redis", "toxiproxy", *NODES]
    )
    # The next run's RunDirectory.create kills the dead run's groups and removes its dir.
    assert_next_run_passes(where, base, interrupted)
    assert still_listening(before.ports) == set()
