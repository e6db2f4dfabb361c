"""The etcd cluster for the embedded backend: 3 or 5 members of Debian's etcd-server (3.4).

Components ``etcd-1`` .. ``etcd-N`` (datastores). Each member is a mesh member: it has its
own loopback host and uid (given by the cluster), its main port is the client port (the
v3 JSON gateway, ``/health``, ``/metrics``) and its ``peer`` port carries Raft. Members
advertise their own peer addresses to one another (``--initial-cluster``), so the links
between them are direct (:func:`mesh_links`) and a network fault between two members is
an iptables rule between their hosts. Clients and the monitor reach each member through a
``client -> etcd-i`` Toxiproxy link (the monitor also directly, at its own address).

What etcd 3.4.23 does here, measured on this machine (heartbeat 100 ms, election 1000 ms,
``--pre-vote``; three members on 127.0.0.21-23, each its own uid, SNAT to its own host):

- Start: a fresh 3-member cluster answers ``/health`` true 0.3 s after the processes
  start, when it does not hit etcd's bootstrap check: a new member first asks each peer
  in turn, 1 s timeout each, whether it already belongs to the cluster, and a peer whose
  port is bound but which does not serve yet lets that request hang. Started all at once,
  3 members were ready in 0.3-2.7 s and 5 in 0.4-4.6 s (median 4.4 s); started 0.15 s
  apart (first boot only, while the data dir is empty), in 0.45-0.8 s and 0.8-1.0 s.
  ``--election-timeout`` must be at least 5 x ``--heartbeat-interval`` (etcd refuses to
  start otherwise).
- Stop: SIGTERM takes 1-2 s (a leader first hands leadership over), hence a small
  ``stop_timeout`` before SIGKILL, which etcd survives (WAL).
- Killed leader (SIGKILL): its client port refuses at once; the peers'
  ``etcd_network_active_peers`` for it drop to 0 within 0.1 s; ``/health`` on the others
  says false after 1 s (its linearizable read times out); a new leader is elected 1.5 s
  after the kill (term + 1). Requests in flight through followers hang until etcd's own
  request timeout (5 s + 2 x election = 7 s), so a client with a 1 s timeout sees timeouts.
- Paused leader (SIGSTOP): every probe of it times out; the others elect a new leader 1.0-
  1.5 s later; their ``active_peers`` for it stay 1 for about 5 s (rafthttp's 5 s read
  timeout), then 0. SIGCONT: it rejoins as a follower within 0.1 s.
- Paused follower: nothing changes for the others (no election); their ``active_peers``
  for it drop to 0 after about 4.6 s.
- Isolated leader (DROP both ways to every peer): the majority elects a new leader 1.45 s
  later; the old leader steps down (CheckQuorum) after about 1.6 s and then sees no
  leader; ``/health`` is false (after its 1 s read timeout) on every member until the
  majority has its new leader, and stays false on the isolated one. ``active_peers`` drops
  to 0 on both sides only after about 5 s. With ``--pre-vote`` the healed member rejoins
  as a follower without disturbing the cluster; without it, its raised term forced a
  second election on heal (2 s more without a leader), hence pre-vote on by default.
- Quorum lost (two of three frozen): the remaining leader steps down after 1.7 s
  (``etcd_server_has_leader`` 0, status ``errors: ["etcdserver: no leader"]``, no
  ``leader`` field); ``/health`` answers false after 1 s, then at once once it sees no
  leader. A put fails only after 7 s (``etcdserver: request timed out``, gRPC code 14).
  The term in ``/v3/maintenance/status`` does not move while a member campaigns alone.
- Peer traffic: a follower receives heartbeats from its leader every heartbeat interval
  and the leader a response from each follower (``etcd_network_peer_received_bytes_total
  {From=<peer id hex>}`` grows); two followers exchange nothing but rafthttp's link
  heartbeats, which are counted under ``From="0"``. ``etcd_network_peer_round_trip_time_
  seconds`` is fed every 30 s (5 s while a peer is unhealthy) with a smoothed round trip:
  a latency figure, not a liveness signal.
- IDs: the JSON gateway writes member IDs as decimal strings, ``/metrics`` labels as
  lower-case hex without padding; keys and values are base64.
- Clock: libfaketime does not reach a Go binary (Go reads the clock through the vDSO).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from pytest_operator import (
    CLIENT,
    Address,
    Addresses,
    ClusterError,
    ClusterSpec,
    ComponentKind,
    ComponentSpec,
    LinkSpec,
    mesh_links,
)

PEER = "peer"
NODE_COUNTS = (3, 5)
CLUSTER_TOKEN = "pytest-operator"
CLOCK_NOTE = (
    "etcd is a Go binary: Go reads the clock through the vDSO, not libc, "
    "so libfaketime cannot skew it"
)
STOP_TIMEOUT = 3.0
"""Seconds a member gets to stop on SIGTERM (it takes 1-2 s) before SIGKILL."""
READY_TIMEOUT = 30.0
BOOT_STAGGER = 0.15
"""Seconds between two members' first starts (see the bootstrap check above)."""
STAGGERED = 'if [ ! -d "$1/member" ]; then sleep "$2"; fi; shift 2; exec "$@"'
"""sh: sleep $2 unless the data dir $1 holds a member already, then exec the command."""


def member_names(nodes: int) -> tuple[str, ...]:
    """``etcd-1`` .. ``etcd-N``; a ValueError unless ``nodes`` is 3 or 5."""
    if nodes not in NODE_COUNTS:
        valid = " or ".join(str(n) for n in NODE_COUNTS)
        raise ValueError(f"etcd: nodes={nodes}: a cluster has {valid} members")
    return tuple(f"etcd-{i}" for i in range(1, nodes + 1))


def find_etcd() -> str:
    """The ``etcd`` binary on PATH, or a :class:`ClusterError` saying how to get it."""
    found = shutil.which("etcd")
    if found is None:
        raise ClusterError("etcd is not on PATH: apt-get install etcd-server (./dev installs it)")
    return found


def check_timeouts(heartbeat_ms: int, election_ms: int) -> None:
    """etcd's own rule, checked before any process starts: a ValueError naming both."""
    if heartbeat_ms < 1:
        raise ValueError(f"etcd: heartbeat_ms={heartbeat_ms}: must be a positive integer")
    if election_ms < 5 * heartbeat_ms:
        raise ValueError(
            f"etcd: election_ms={election_ms}: must be at least 5 x heartbeat_ms"
            f" ({5 * heartbeat_ms}); etcd refuses to start otherwise"
        )


MAX_READY_REPLY = 64 * 1024


async def http_get(address: Address, path: str, timeout: float) -> tuple[int, bytes] | None:
    """``GET path`` (HTTP/1.0, read to the end): the status and the raw reply, or None when
    nothing answered within ``timeout``."""
    request = f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            try:
                writer.write(request)
                await writer.drain()
                reply = await reader.read(MAX_READY_REPLY)
                while len(reply) < MAX_READY_REPLY and (more := await reader.read(4096)):
                    reply += more
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    parts = reply.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]), reply


class HealthReady:
    """Ready when ``GET /health`` answers ``{"health":"true"}``: the member has a leader and
    a linearizable read went through (an open port is not enough: a member that has not
    joined its cluster yet answers false)."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float = 1.5) -> None:
        self.timeout = timeout

    async def __call__(self, address: Address) -> bool:
        reply = await http_get(address, "/health", self.timeout)
        return reply is not None and reply[0] == 200 and b'"health":"true"' in reply[1]


def _member(name: str, names: tuple[str, ...], flags: tuple[str, ...]) -> ComponentSpec:
    def command(a: Addresses) -> list[str]:
        client = a.address(name).url()
        peer = a.address(name, PEER).url()
        initial = ",".join(f"{n}={a.address(n, PEER).url()}" for n in names)
        data = a.data_dir(name) / "member-data"
        delay = BOOT_STAGGER * names.index(name)
        return [
            "/bin/sh",
            "-c",
            STAGGERED,
            "etcd-staggered",
            str(data),
            f"{delay:g}",
            find_etcd(),
            "--name",
            name,
            "--data-dir",
            str(data),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            CLUSTER_TOKEN,
            *flags,
        ]

    return ComponentSpec(
        name,
        ComponentKind.DATASTORE,
        command,
        ready=HealthReady(),
        ports=(PEER,),
        clock_note=CLOCK_NOTE,
        ready_timeout=READY_TIMEOUT,
        stop_timeout=STOP_TIMEOUT,
    )


def etcd_cluster_spec(
    nodes: int = 3,
    *,
    heartbeat_ms: int = 100,
    election_ms: int = 1000,
    pre_vote: bool = True,
) -> ClusterSpec:
    """The spec of an ``nodes``-member etcd cluster (3 or 5).

    ``heartbeat_ms`` and ``election_ms`` are etcd's ``--heartbeat-interval`` and
    ``--election-timeout``: the defaults (100 ms, 1 s) elect a new leader in about 1.5 s
    and hold on a loaded 2-core machine. ``pre_vote`` (``--pre-vote``) keeps a member that
    was cut off from forcing an election when it comes back.
    """
    names = member_names(nodes)
    check_timeouts(heartbeat_ms, election_ms)
    flags = (
        "--heartbeat-interval",
        str(heartbeat_ms),
        "--election-timeout",
        str(election_ms),
        *(("--pre-vote",) if pre_vote else ()),
    )
    return ClusterSpec(
        components=tuple(_member(n, names, flags) for n in names),
        links=(*mesh_links(names), *(LinkSpec(CLIENT, n) for n in names)),
    )
