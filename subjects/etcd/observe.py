"""Observing an etcd cluster in the engine's generic vocabulary.

Per member, each tick, three probes in parallel at its own client address, each capped:
- ``POST /v3/maintenance/status`` (0.5 s): reachable or not (refused: nothing listens, a
  crash; timeout: a frozen process), its member ID, the leader it sees (absent when none),
  its term, its errors (``etcdserver: no leader``);
- ``GET /health``: etcd's own check, a leader and a linearizable read through the
  leader's quorum. Without quorum it answers false only after its 1 s read timeout, so
  the request may outlive the tick: a tick waits 0.1 s for it, a later tick reads the
  answer, and a request unanswered for 0.6 s means the member cannot commit;
- ``GET /metrics`` (0.5 s), read for a dozen series only (parsing the whole 150 KB page
  costs 30 ms): its view of each peer (``etcd_network_active_peers``, bytes received from
  it, the smoothed round trip), its start time, the leader changes it has seen.

From these: role (leader / follower; a member that sees no leader is campaigning, so
candidate), term, leader (member IDs mapped to names through the members' own status
and, for an ID never seen, the member list), quorum (a leader, and ``/health`` true),
``ready`` = quorum, and ``started_at``. A member that does not answer its status probe
is unreachable and the other two probes are dropped, so a frozen member costs one
0.5 s timeout, never a stalled tick.

A member's link to a peer (``LinkSignals(member, peer)``) is down when etcd says the peer
is not active (its stream broke: at once for a crashed peer, after rafthttp's 5 s read
timeout for a silent one), or, faster, when the peer should be talking and is not: a
follower hears its leader every heartbeat and a leader each follower, so no bytes from
that peer for ``silence`` seconds (8 heartbeats, at least 0.8 s) means the link is cut
(or the peer frozen), as long as the peer itself still reports that relation (a leader
that stepped down sends no heartbeats). Two members that both see no leader campaign
(pre-vote) every election timeout and answer each other, so between them two election
timeouts and a half of silence means the same; a member that still follows a leader
ignores votes (its lease), so a campaigner is not expected to hear from it. Two
followers of a leader exchange nothing measurable, so their link is judged only by
``active_peers``. A link found silent stays down until bytes flow again, the stream
reconnects, or etcd's read timeout passes with the stream still up (then it was healed
before etcd noticed).

The client history gives each member's error rate (requests that failed or timed out over
the last second) and the latency clients saw, as the ``client -> member`` link; and, with a
linearizability watch, the history's safety violations: an op that saw what it could not
have seen (a stale read) is a ``linearizable`` violation at the member that served it. The
watch judges only the ops new since the last tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from pytest_operator import (
    CLIENT,
    ClientSeen,
    ComponentSignals,
    Fact,
    History,
    LinkSignals,
    Observation,
    ProbeFailure,
    Role,
    client_seen,
)
from pytest_operator._prom import Labels, Scrape, delta  # the Prometheus text helpers

if TYPE_CHECKING:
    from pytest_operator import LinearizabilityWatch

PROBE_TIMEOUT = 0.5
HEALTH_TIMEOUT = 0.6
"""Seconds a /health request may wait before the member counts as unable to commit."""
HEALTH_WAIT = 0.1
"""Seconds a tick waits for a /health answer; a slower one is read by a later tick."""
HEALTH_REQUEST_TIMEOUT = 2.0
"""A /health request's own bound (etcd answers false after its 1 s read timeout)."""
STREAM_TIMEOUT = 7.0
"""Seconds after which etcd has surely noticed a cut stream (rafthttp reads time out
after 5 s): a link found silent whose stream never broke was healed before."""
MIN_SILENCE = 0.8
SILENT_HEARTBEATS = 8
CAMPAIGN_SILENCE = 2.5
"""Election timeouts two campaigning members may go without hearing from each other before
their link counts as cut (each campaigns every 1 to 2 election timeouts)."""
MEMBER_LIST_EVERY = 1.0
"""Seconds between two reads of the member list (to name an unknown member ID)."""

METRICS = (
    "etcd_server_is_leader",
    "etcd_server_has_leader",
    "etcd_server_is_learner",
    "etcd_server_leader_changes_seen_total",
    "etcd_network_active_peers",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_round_trip_time_seconds_sum",
    "etcd_network_peer_round_trip_time_seconds_count",
    "process_start_time_seconds",
)
_UNREADABLE = (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError, AttributeError)
"""What reading one member's reply can raise when it is down, slow or answers otherwise."""
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, at: float, wanted: Sequence[str] = METRICS) -> Scrape:
    """The samples of the ``wanted`` series of a Prometheus text page (others skipped
    unparsed: etcd's page is 1,500 lines, of which we read about 20)."""
    names = frozenset(wanted)
    prefixes = tuple(wanted)
    samples: dict[tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) not in names:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = value
    return Scrape(at, samples)


def hex_id(member_id: int) -> str:
    """A member ID as ``/metrics`` labels write it (lower-case hex, no padding)."""
    return format(member_id, "x")


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """What ``/v3/maintenance/status`` says (IDs are decimal strings in the JSON)."""

    member_id: int
    leader_id: int
    """0: it sees no leader (the field is absent then)."""
    term: int
    errors: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object) -> MemberStatus:
        """Parse a status reply; a malformed one raises ValueError."""
        if not isinstance(raw, dict) or not isinstance(raw.get("header"), dict):
            raise ValueError(f"status reply without a header: {str(raw)[:200]}")
        header = raw["header"]
        try:
            errors = raw.get("errors") or ()
            return cls(
                member_id=int(header["member_id"]),
                leader_id=int(raw.get("leader", 0)),
                term=int(raw.get("raftTerm", header.get("raft_term", 0))),
                errors=tuple(str(e) for e in errors),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed status reply {str(raw)[:200]}: {exc}") from exc


@dataclass(slots=True)
class _Probe:
    name: str
    reachable: bool = False
    failure: ProbeFailure | None = None
    probe_ms: float | None = None
    status: MemberStatus | None = None
    health: bool | None = None
    """/health said true (True) or false (False); None: no answer either way."""
    health_note: str | None = None
    scrape: Scrape | None = None
    detail: str | None = None


@dataclass(slots=True)
class _HealthCheck:
    """One member's ``/health`` request, which may outlive a tick."""

    task: asyncio.Task[httpx.Response] | None = None
    started: float = 0.0
    """time.monotonic() when the request in flight was sent."""
    last: tuple[bool | None, str | None] = (None, None)
    """The last answer: true / false / unknown, and a note when it is not true."""


@dataclass(slots=True)
class _PeerTrack:
    """What one member's metrics said of one peer, across ticks."""

    received: float | None = None
    heard_at: float = 0.0
    """When bytes from the peer were last seen to grow (first sight counts)."""
    expected_since: float | None = None
    """Since when the peer should be talking (it is this member's leader, this member
    leads, or both campaign); None while it need not."""
    window: float | None = None
    """How long it may stay silent, in the relation that began at ``expected_since``."""
    silent_since: float | None = None
    """When silence marked the link down; None while it is not so marked."""
    stream_broke: bool = False
    """etcd reported the peer inactive since the link was marked silent."""
    rtt_ms: float | None = None


@dataclass(slots=True)
class _LeaderTrack:
    leader: str | None = None
    """The last leader this member reported (None until it reported one)."""
    changed_at: float | None = None


def _failure_of(exc: BaseException) -> ProbeFailure:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return ProbeFailure.TIMEOUT
    return ProbeFailure.REFUSED


class EtcdObserver:
    """Observes the members at ``members`` (name -> base URL of its own client address)."""

    def __init__(
        self,
        members: Mapping[str, str],
        history: History,
        *,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        probe_timeout: float = PROBE_TIMEOUT,
        health_timeout: float = HEALTH_TIMEOUT,
        watch: LinearizabilityWatch | None = None,
    ) -> None:
        self.members = dict(members)
        self.history = history
        self.watch = watch
        self.probe_timeout = probe_timeout
        self.health_timeout = health_timeout
        self.silence = max(MIN_SILENCE, SILENT_HEARTBEATS * heartbeat_ms / 1000)
        self.campaign_silence = CAMPAIGN_SILENCE * election_ms / 1000
        self._http = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
        self._names: dict[int, str] = {}  # member ID -> name
        self._member_list_at = 0.0
        self._prev: dict[str, Scrape] = {}
        self._peers: dict[tuple[str, str], _PeerTrack] = {}
        self._leaders: dict[str, _LeaderTrack] = {}
        self._health: dict[str, _HealthCheck] = {}

    async def aclose(self) -> None:
        pending = [c.task for c in self._health.values() if c.task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._http.aclose()

    # --- probes ---------------------------------------------------------------------------

    async def _probe(self, name: str, base: str) -> _Probe:
        probe = _Probe(name)
        t0 = time.time()
        health = self._health.setdefault(name, _HealthCheck())
        if health.task is None:
            health.task = asyncio.create_task(self._health_request(f"{base}/health"))
            health.started = time.monotonic()
        metrics = asyncio.create_task(self._get(f"{base}/metrics"))
        try:
            r = await self._post(f"{base}/v3/maintenance/status")
            probe.probe_ms = (time.time() - t0) * 1000
            if r.status_code != 200:
                probe.failure = ProbeFailure.ERROR
                probe.detail = f"status answered {r.status_code}: {r.text[:200]}"
                return probe
            probe.status = MemberStatus.parse(r.json())
            probe.reachable = True
            self._names[probe.status.member_id] = name
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            probe.failure = ProbeFailure.ERROR if isinstance(exc, ValueError) else _failure_of(exc)
            probe.detail = f"status: {type(exc).__name__}: {exc}"
            return probe
        finally:
            if not probe.reachable:
                metrics.cancel()
                await asyncio.gather(metrics, return_exceptions=True)
        await asyncio.wait([health.task], timeout=HEALTH_WAIT)
        probe.health, probe.health_note = self._health_now(health)
        m = (await asyncio.gather(metrics, return_exceptions=True))[0]
        if isinstance(m, httpx.Response) and m.status_code == 200:
            probe.scrape = parse_metrics(m.text, time.time())
        return probe

    async def _post(self, url: str) -> httpx.Response:
        """POST ``{}``, the whole exchange bounded (httpx bounds each phase on its own)."""
        async with asyncio.timeout(self.probe_timeout):
            return await self._http.post(url, content=b"{}", timeout=self.probe_timeout)

    async def _health_request(self, url: str) -> httpx.Response:
        async with asyncio.timeout(HEALTH_REQUEST_TIMEOUT):
            return await self._http.get(url, timeout=HEALTH_REQUEST_TIMEOUT)

    async def _get(self, url: str) -> httpx.Response:
        async with asyncio.timeout(self.probe_timeout):
            return await self._http.get(url, timeout=self.probe_timeout)

    def _health_now(self, check: _HealthCheck) -> tuple[bool | None, str | None]:
        """What ``/health`` says now: the answer if it came, else, while the request has
        been waiting under ``health_timeout``, the previous answer; past that, False (a
        linearizable read that long means no quorum answers)."""
        task = check.task
        if task is None:
            return check.last
        if not task.done():
            waited = time.monotonic() - check.started
            if waited < self.health_timeout:
                return check.last
            return False, (
                f"/health gave no answer in {waited:.1f} s (its linearizable read found no quorum)"
            )
        check.task = None
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            check.last = (False, f"/health gave no answer in {HEALTH_REQUEST_TIMEOUT:g} s")
        elif exc is not None:
            check.last = (None, f"/health: {type(exc).__name__}: {exc}")
        else:
            h = task.result()
            try:
                body = h.json()
                ok = h.status_code == 200 and body.get("health") == "true"
                check.last = (ok, None if ok else f"/health: {h.text.strip()[:200]}")
            except (ValueError, AttributeError):
                check.last = (None, f"/health answered {h.status_code}: {h.text[:200]}")
        return check.last

    async def _learn_names(self) -> None:
        """Read the member list from any member that answers (at most once a second)."""
        now = time.monotonic()
        if now - self._member_list_at < MEMBER_LIST_EVERY:
            return
        self._member_list_at = now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self.probe_timeout):  # two members' worth, at most
                for base in self.members.values():
                    try:
                        r = await self._post(f"{base}/v3/cluster/member/list")
                        listed = r.json()["members"]
                        self._names.update(
                            (int(m["ID"]), str(m["name"]))
                            for m in listed
                            if m.get("name") in self.members
                        )
                        return
                    except _UNREADABLE:
                        continue

    def _name_of(self, member_id: int) -> str | None:
        return self._names.get(member_id) if member_id else None

    # --- signals --------------------------------------------------------------------------

    def _component(self, p: _Probe, seen: ClientSeen | None, now: float) -> ComponentSignals:
        error_rate = None if seen is None else seen.error_rate
        if not p.reachable or p.status is None:
            return ComponentSignals(
                p.name,
                reachable=False,
                error_rate=error_rate,
                probe_failure=p.failure,
                detail=p.detail,
            )
        s = p.status
        scrape = p.scrape
        has_leader = s.leader_id != 0
        if scrape is not None and scrape.value("etcd_server_has_leader") == 0:
            has_leader = False
        learner = scrape is not None and (scrape.value("etcd_server_is_learner") or 0) >= 1
        if learner:
            role = Role.LEARNER
        elif has_leader and s.leader_id == s.member_id:
            role = Role.LEADER
        elif has_leader:
            role = Role.FOLLOWER
        else:
            role = Role.CANDIDATE
        leader = self._name_of(s.leader_id) if has_leader else None
        quorum: bool | None = False if not has_leader else p.health
        started = None if scrape is None else scrape.value("process_start_time_seconds")
        self._track_leader(p.name, leader, now)
        notes = [f"{role} in term {s.term}"]
        if leader is not None and role is not Role.LEADER:
            notes.append(f"leader {leader}")
        notes += list(s.errors)
        if p.health_note:
            notes.append(p.health_note)
        return ComponentSignals(
            p.name,
            reachable=True,
            ready=quorum,
            error_rate=error_rate,
            started_at=started,
            probe_ms=p.probe_ms,
            detail="; ".join(notes),
            role=role,
            term=s.term,
            leader=leader,
            quorum=quorum,
        )

    def _track_leader(self, name: str, leader: str | None, now: float) -> None:
        track = self._leaders.setdefault(name, _LeaderTrack())
        if leader is None:
            return
        if track.leader is not None and leader != track.leader:
            track.changed_at = now
        track.leader = leader

    def _links(self, p: _Probe, views: Mapping[str, int]) -> list[LinkSignals]:
        """``p``'s view of each peer, from its metrics (nothing when it gave none).
        ``views``: the leader ID each member that answered reports (0: none)."""
        scrape, status = p.scrape, p.status
        if scrape is None or status is None:
            return []
        prev = self._prev.get(p.name)
        self._prev[p.name] = scrape
        leads = status.leader_id != 0 and status.leader_id == status.member_id
        ids = {name: mid for mid, name in self._names.items()}
        out = []
        for peer in self.members:
            if peer == p.name:
                continue
            peer_id = ids.get(peer)
            if peer_id is None:
                out.append(LinkSignals(p.name, peer))
                continue
            label = hex_id(peer_id)
            track = self._peers.setdefault((p.name, peer), _PeerTrack())
            # What the peer should be sending, as both ends see it now (a peer the
            # monitor could not ask is taken at this member's word).
            peer_sees = views.get(peer)
            if leads and peer_sees in (None, status.member_id):
                window: float | None = self.silence  # answers to our heartbeats
            elif status.leader_id == peer_id and peer_sees in (None, peer_id):
                window = self.silence  # our leader's heartbeats
            elif status.leader_id == 0 and peer_sees == 0:
                window = self.campaign_silence  # each one's (pre-)votes and answers
            else:
                window = None  # two followers, or a leader that stepped down: nothing due
            up = self._peer_up(track, scrape, label, window)
            sent = delta(prev, scrape, "etcd_network_peer_round_trip_time_seconds_count", To=label)
            if sent:
                rtt = delta(prev, scrape, "etcd_network_peer_round_trip_time_seconds_sum", To=label)
                if rtt is not None:
                    track.rtt_ms = rtt / sent * 1000
            out.append(LinkSignals(p.name, peer, up=up, latency_p99_ms=track.rtt_ms))
        return out

    def _peer_up(
        self, track: _PeerTrack, scrape: Scrape, label: str, window: float | None
    ) -> bool | None:
        """Is the link up, as this member's metrics tell? ``window``: how long the peer
        may stay silent now (None: it need not talk)."""
        t = scrape.at
        received = scrape.value("etcd_network_peer_received_bytes_total", From=label)
        active = scrape.value("etcd_network_active_peers", Remote=label)
        if received is not None and received != track.received:
            track.heard_at = t
            track.silent_since = None
            track.stream_broke = False
        track.received = received
        if window is None:
            track.expected_since, track.window = None, None
        elif track.window != window:  # the peer is expected to talk from now on
            track.expected_since, track.window = t, window
        if active is not None and active < 1:
            if track.silent_since is not None:
                track.stream_broke = True
            return False
        if (
            track.expected_since is not None
            and track.window is not None
            and t - max(track.heard_at, track.expected_since) >= track.window
        ):
            if track.silent_since is None:
                track.silent_since = t
            return False
        if track.silent_since is not None:
            if track.stream_broke or t - track.silent_since > STREAM_TIMEOUT:
                track.silent_since = None  # reconnected, or healed before etcd noticed
                track.stream_broke = False
                return True
            return False
        if active is None:
            return None
        return True

    def _facts(self, p: _Probe, now: float) -> list[Fact]:
        out = []
        track = self._leaders.get(p.name)
        if track is not None and track.changed_at is not None:
            out.append(Fact("since_leader_change_s", round(now - track.changed_at, 3), p.name))
        if p.scrape is not None:
            changes = p.scrape.value("etcd_server_leader_changes_seen_total")
            if changes is not None:
                out.append(Fact("leader_changes_seen", changes, p.name))
        return out

    async def observe(self) -> Observation:
        probes = list(await asyncio.gather(*(self._probe(n, u) for n, u in self.members.items())))
        wanted = {p.status.leader_id for p in probes if p.status is not None}
        wanted.discard(0)
        if len(self._names) < len(self.members) or not wanted <= set(self._names):
            await self._learn_names()
        now = time.time()
        seen = client_seen(self.history.snapshot(), now)
        components = [self._component(p, seen.get(p.name), now) for p in probes]
        views = {p.name: p.status.leader_id for p in probes if p.status is not None}
        links = [link for p in probes for link in self._links(p, views)]
        for name, s in sorted(seen.items()):
            links.append(
                LinkSignals(CLIENT, name, error_rate=s.error_rate, latency_p99_ms=s.latency_p99_ms)
            )
        return Observation(
            at=now,
            components=tuple(components),
            links=tuple(links),
            safety=() if self.watch is None else self.watch.check(now),
            facts=tuple(f for p in probes for f in self._facts(p, now)),
        )
