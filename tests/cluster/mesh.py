"""A stand-in mesh for the engine's tests: N members (tests/cluster/mesh_member.py, run by
/usr/bin/python3 as their own uids) on direct links between every pair, each reached by the
client through a Toxiproxy proxy; and who hears whom, measured over a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from pytest_operator._cluster import (
    CLIENT,
    Addresses,
    ClusterSpec,
    ComponentSpec,
    EmbeddedCluster,
    HttpReady,
    LinkSpec,
    mesh_links,
)
from pytest_operator._topology import ComponentKind

MEMBER = Path(__file__).with_name("mesh_member.py")
PYTHON = "/usr/bin/python3"  # the venv's python lives under /root, which a member cannot read
WINDOW_S = 1.0  # pings every 50 ms: a live pair counts ~20 in a window, a cut pair 0


def member_names(n: int) -> list[str]:
    return [f"m-{i}" for i in range(1, n + 1)]


def member(name: str, names: Sequence[str], clock_note: str | None = None) -> ComponentSpec:
    def command(a: Addresses) -> list[str]:
        peers = [f"{p}={a.address(p, 'peer')}" for p in names if p != name]
        return [
            PYTHON,
            str(MEMBER),
            name,
            a.host(name),
            str(a.port(name)),
            str(a.port(name, "peer")),
            *peers,
        ]

    return ComponentSpec(
        name,
        ComponentKind.DATASTORE,
        command,
        ready=HttpReady("/"),
        ports=("peer",),
        clock_note=clock_note,
    )


def mesh_spec(n: int = 3, *extra: ComponentSpec, clock_note: str | None = None) -> ClusterSpec:
    names = member_names(n)
    return ClusterSpec(
        components=(*(member(m, names, clock_note) for m in names), *extra),
        links=(*mesh_links(names), *(LinkSpec(CLIENT, m) for m in names)),
    )


@contextlib.contextmanager
def open_base() -> Iterator[Path]:
    """A run base every uid can traverse (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="pytest-operator-mesh-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Heard:
    """What each member heard: pings per (sender, receiver), and the sender's source address
    as the receiver saw it."""

    counts: dict[tuple[str, str], int]
    sources: dict[tuple[str, str], str]


async def heard(cluster: EmbeddedCluster, members: Sequence[str] | None = None) -> Heard:
    counts: dict[tuple[str, str], int] = {}
    sources: dict[tuple[str, str], str] = {}
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
        for receiver in members or cluster.mesh():
            body = (await http.get(cluster.address(receiver).url(path="/"))).json()
            for sender, entry in body["heard"].items():
                counts[(sender, receiver)] = int(entry["count"])
                sources[(sender, receiver)] = str(entry["from"])
    return Heard(counts, sources)


async def connectivity(
    cluster: EmbeddedCluster, window: float = WINDOW_S, settle: float = 0.2
) -> set[tuple[str, str]]:
    """The ordered pairs (sender, receiver) whose pings arrived during ``window`` seconds
    (after ``settle`` seconds, so pings sent before a change do not count)."""
    await asyncio.sleep(settle)
    before = await heard(cluster)
    await asyncio.sleep(window)
    after = await heard(cluster)
    return {pair for pair, n in after.counts.items() if n > before.counts.get(pair, 0)}


def pairs(names: Sequence[str]) -> set[tuple[str, str]]:
    """Every ordered pair of distinct names."""
    return {(a, b) for a in names for b in names if a != b}


def between(group_a: Sequence[str], group_b: Sequence[str]) -> set[tuple[str, str]]:
    """The ordered pairs across two groups, both directions."""
    return {(a, b) for a in group_a for b in group_b} | {(b, a) for a in group_a for b in group_b}


def iptables_lines(needle: str) -> list[str]:
    """Lines of ``iptables -S`` and ``iptables -t nat -S`` that contain ``needle``."""
    lines = []
    for table in ("filter", "nat"):
        out = subprocess.run(
            ["iptables", "-w", "5", "-t", table, "-S"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
        lines += [line for line in out.splitlines() if needle in line]
    return lines


def uid_of(pid: int) -> int:
    """The real uid of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def owner_of(path: Path) -> int:
    return os.stat(path).st_uid
