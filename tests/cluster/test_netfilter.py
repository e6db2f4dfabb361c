"""The run's iptables rules never outlive it: a Ctrl-C inside a fault and the atexit hook
remove them, a SIGKILL leaves them to the next start's cleanup, which also reclaims the dead
run's slot. Rules, slots and processes are real (a driver process runs a stand-in mesh:
tests/cluster/mesh_driver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_operator._cluster import EmbeddedCluster
from pytest_operator._netfilter import (
    Netfilter,
    NetfilterError,
    NetSlot,
    Rule,
    cleanup_stale,
    list_rules,
)
from pytest_operator._process import process_start_time

from .mesh import iptables_lines, mesh_spec, open_base

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("mesh_driver.py")
ROOT = Path(__file__).resolve().parents[2]
UNUSED = ("127.77.0.1", "127.77.0.2")  # slot 0 is never handed out


@dataclass(frozen=True)
class Run:
    proc: subprocess.Popen[str]
    comment: str
    pids: dict[str, int]
    starts: dict[str, int]

    def survivors(self) -> list[str]:
        return sorted(
            n for n, pid in self.pids.items() if process_start_time(pid) == self.starts[n]
        )

    def settle(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.survivors() and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill_leftovers(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        for name in self.survivors():
            os.killpg(self.pids[name], signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


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
    return Run(proc, info["comment"], info["pids"], info["starts"])


@pytest.fixture
def base() -> Iterator[Path]:
    with open_base() as path:
        yield path


def check_cut(run: Run) -> None:
    """Before the end: the SNAT rules and the isolation's drops are there (so the test can
    fail) and every process runs."""
    lines = iptables_lines(run.comment)
    assert len([x for x in lines if "SNAT" in x]) == 2
    assert len([x for x in lines if " drop=isolate-" in x]) == 2 * 2  # both ways, each twice
    assert run.survivors() == ["m-1", "m-2", "toxiproxy"]


def test_ctrl_c_inside_a_fault_removes_every_rule(base: Path) -> None:
    run = launch(base, "hang")
    try:
        check_cut(run)
        run.proc.send_signal(signal.SIGINT)
        _, err = run.proc.communicate(timeout=60)
        assert "KeyboardInterrupt" in err
        assert iptables_lines(run.comment) == []
        run.settle()
        assert run.survivors() == []
    finally:
        run.kill_leftovers()


def test_atexit_removes_the_rules_of_a_cluster_never_stopped(base: Path) -> None:
    run = launch(base, "exit")
    try:
        check_cut(run)
        _, err = run.proc.communicate("go\n", timeout=60)
        assert run.proc.returncode == 0, err
        assert iptables_lines(run.comment) == []
        run.settle()
        assert run.survivors() == []
    finally:
        run.kill_leftovers()


async def test_sigkill_leaves_rules_that_the_next_start_removes(base: Path) -> None:
    run = launch(base, "hang")
    try:
        check_cut(run)
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=30)
        # nobody removed them: the rules outlive the killed run...
        assert len(iptables_lines(run.comment)) == 2 + 2 * 2  # SNAT x2; isolation: 2 ways x 2
        # ...until the next cluster start cleans up after dead runs
        async with EmbeddedCluster(mesh_spec(2), base_dir=base) as cluster:
            assert iptables_lines(run.comment) == []
            assert len(iptables_lines(cluster.netfilter.comment)) == 2
            run.settle()
            assert run.survivors() == []  # and the stale run directory's processes
    finally:
        run.kill_leftovers()


def test_cleanup_stale_removes_only_rules_of_dead_owners() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    me, ticks = os.getpid(), process_start_time(os.getpid())

    def rule(owner: int, run: str) -> Rule:
        comment = f"pytest-operator owner={owner} run={run}"
        spec = ("-s", f"{UNUSED[0]}/32", "-d", f"{UNUSED[1]}/32",
                "-m", "comment", "--comment", comment, "-j", "DROP")  # fmt: skip
        return Rule("filter", "INPUT", spec)

    gone = rule(dead.pid, "1-s0-1")
    recycled = rule(me, f"{ticks + 1 if ticks is not None else 0}-s0-1")  # same PID, other process
    alive = rule(me, f"{ticks}-s0-1")
    try:
        for r in (gone, recycled, alive):
            done = subprocess.run(
                ["iptables", "-w", "5", "-I", "INPUT", "1", *r.spec], timeout=15, check=False
            )
            assert done.returncode == 0
        cleanup_stale()
        comments = {r.comment() for r in list_rules("filter")}
        assert alive.comment() in comments
        assert gone.comment() not in comments
        assert recycled.comment() not in comments
    finally:
        for r in (gone, recycled, alive):
            subprocess.run(["iptables", "-w", "5", "-D", "INPUT", *r.spec], timeout=15, check=False)


HOLD_SLOT = """
import sys, time
from pathlib import Path
from pytest_operator._netfilter import NetSlot
slot = NetSlot.acquire(Path(sys.argv[1]))
print(slot.index, flush=True)
time.sleep(600)
"""


def test_a_dead_runs_slot_is_reclaimed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "1"
        second = NetSlot.acquire(tmp_path)  # slot 1 is held by a live process
        assert (second.index, second.host(3), second.uid(3)) == (2, "127.77.2.3", 1_770_002_003)
        second.release()
        holder.kill()
        holder.wait(timeout=10)
        third = NetSlot.acquire(tmp_path)  # its owner died: slot 1 is free again
        assert third.index == 1
        assert (tmp_path / "slot-1").read_text().split()[0] == str(os.getpid())
        third.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_failing_iptables_call_names_the_rule_and_the_reason(tmp_path: Path) -> None:
    netfilter = Netfilter(NetSlot.acquire(tmp_path))
    try:
        with pytest.raises(NetfilterError) as err:
            netfilter.drop("not-a-host", UNUSED[1], "t")
        message = str(err.value)
        assert message.startswith("iptables could not add -t filter -A INPUT -s not-a-host/32 ")
        assert netfilter.drops() == ()
        netfilter.undrop("not-a-host", UNUSED[1], "t")  # nothing to remove: no error
    finally:
        netfilter.close()
        netfilter.slot.release()
    with pytest.raises(NetfilterError, match=r"^this run's netfilter is closed$"):
        netfilter.drop(*UNUSED, "t")


SENDER = """
import socket, sys, time
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
for _ in range(200):  # 10 s at most
    try:
        conn.send(b"x" * 10)
    except OSError:
        break
    time.sleep(0.05)
"""

RECEIVER = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
conn.settimeout(0.1)
print("connected", flush=True)
t0 = time.monotonic()
while time.monotonic() - t0 < 4:
    try:
        if conn.recv(100):
            print(f"{time.monotonic():.3f}", flush=True)  # one clock for every process
    except TimeoutError:
        pass
"""


def test_a_drop_cuts_the_answers_on_connections_the_other_side_opened() -> None:
    """b opens a TCP connection to a, a keeps sending on it: drop(a, b) must silence a
    (the reverse of b's SNAT turns those packets' destination back into 127.0.0.1 before
    INPUT sees them, so the rule on addresses alone would let them through)."""
    slot = NetSlot.acquire()
    net = Netfilter(slot)
    a, b = slot.host(1), slot.host(2)
    procs: list[subprocess.Popen[str]] = []
    try:
        net.start({slot.uid(1): a, slot.uid(2): b})
        run = dict(stdout=subprocess.PIPE, text=True, start_new_session=True)
        sender = subprocess.Popen(["/usr/bin/python3", "-c", SENDER, a], user=slot.uid(1), **run)
        procs.append(sender)
        assert sender.stdout is not None
        port = sender.stdout.readline().strip()
        receiver = subprocess.Popen(
            ["/usr/bin/python3", "-c", RECEIVER, a, port], user=slot.uid(2), **run
        )
        procs.append(receiver)
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "connected"
        assert float(receiver.stdout.readline()) > 0  # a's data flows before the cut
        net.drop(a, b, "test")
        cut = time.monotonic()
        # what was already in flight may still land; nothing sent after the cut does
        heard = [float(t) for t in receiver.stdout]
        late = [round(t - cut, 2) for t in heard if t > cut + 0.5]
        assert not late, f"a's packets reached b this long after the cut: {late}"
        assert len(net.rules()) == 2 + 2  # two SNAT rules, the drop's two rules
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        net.close()
        slot.release()
    assert net.rules() == []
