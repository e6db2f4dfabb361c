"""etcd's invariants, as checks over one generic observation.

Availability: every member answers the monitor (``member_down``); every member that
answers has a leader and can commit (``no_leader``); the leader stays put
(``leader_change``: an election is a window in which writes stall); clients' requests to
each member succeed (``client_errors``, judged from the client history). Safety: at most
one member leads in any term (``split_brain``). Consistency: the clients' history is
linearizable, a register per key (``linearizable``: the observer's linearizability watch
reports an op that saw what it could not have seen, at the member that served it).
"""

from __future__ import annotations

from collections import defaultdict

from pytest_operator import (
    CLIENT,
    Category,
    Finding,
    Invariant,
    Observation,
    Role,
    history_invariant,
)

SINCE_LEADER_CHANGE = "since_leader_change_s"
"""The fact (per member, seconds) the observer publishes once a member saw its leader
change during the session."""


def member_down(obs: Observation) -> list[Finding]:
    return [
        Finding(c.component, f"does not answer its status probe ({c.probe_failure or 'error'})")
        for c in obs.components
        if not c.reachable
    ]


def no_leader(obs: Observation) -> list[Finding]:
    out = []
    for c in obs.components:
        if not c.reachable:
            continue
        if c.leader is None and c.role is not Role.LEADER:
            out.append(Finding(c.component, f"sees no leader (term {c.term})"))
        elif c.quorum is False:
            out.append(Finding(c.component, f"cannot commit: {c.detail or 'no quorum'}"))
    return out


def _leader_change(window_s: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(f.component, f"its leader changed {f.value:.1f} s ago", f.value)
            for f in obs.facts
            if f.name == SINCE_LEADER_CHANGE and f.component is not None and f.value < window_s
        ]

    return Invariant(
        "leader_change",
        Category.AVAILABILITY,
        check,
        description=f"no member sees its leader change (an election; flagged for {window_s:g} s"
        " after the member reports a new leader)",
        threshold=window_s,
    )


def _client_errors(threshold: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        out = []
        for link in obs.links:
            if link.source != CLIENT or link.error_rate is None:
                continue
            if link.error_rate > threshold:
                out.append(
                    Finding(
                        link.target,
                        f"{link.error_rate:.0%} of clients' requests failed or timed out",
                        link.error_rate,
                    )
                )
        return out

    return Invariant(
        "client_errors",
        Category.AVAILABILITY,
        check,
        description=f"at most {threshold:.0%} of the clients' requests to a member fail or time"
        " out (judged from the client history, over the last second)",
        grace=0.5,
        threshold=threshold,
    )


def split_brain(obs: Observation) -> list[Finding]:
    leaders: dict[int, list[str]] = defaultdict(list)
    for c in obs.components:
        if c.reachable and c.role is Role.LEADER and c.term is not None:
            leaders[c.term].append(c.component)
    out = []
    for term, names in sorted(leaders.items()):
        if len(names) > 1:
            others = ", ".join(names)
            out += [Finding(n, f"{others} all lead in term {term}", float(term)) for n in names]
    return out


def invariants(
    *,
    no_leader_grace_s: float = 0.3,
    leader_change_window_s: float = 5.0,
    client_error_rate: float = 0.1,
) -> tuple[Invariant, ...]:
    return (
        Invariant(
            "member_down",
            Category.AVAILABILITY,
            member_down,
            description="every member answers the monitor's status probe",
            grace=0.25,
        ),
        Invariant(
            "no_leader",
            Category.AVAILABILITY,
            no_leader,
            description="every member that answers sees a leader and can commit"
            " (etcd's /health: a linearizable read through a quorum)",
            grace=no_leader_grace_s,
        ),
        _leader_change(leader_change_window_s),
        _client_errors(client_error_rate),
        Invariant(
            "split_brain",
            Category.SAFETY,
            split_brain,
            description="at most one member leads in any term",
        ),
        history_invariant(
            "linearizable",
            "linearizable",
            Category.CONSISTENCY,
            description="the clients' reads, writes and compare-and-sets are linearizable,"
            " a register per key (no read sees a value already overwritten when it began)",
        ),
    )
