"""pytest-operator: chaos and verification of distributed systems, as pytest tests.

The model, after Jepsen: a *cluster* of the subject runs as real processes; a
*workload* drives traffic at it on an open-loop schedule and records every
request in a *history*; *chaos* injects a fault (a cut or slowed link, a killed
or frozen process, a skewed clock) and always heals it; a *monitor* loop polls
the subject's observations and checks its invariants into a timeline; a
*diagnosis* engine ranks root causes from the topology and the timeline; and
the test asserts the fault was detected and named. Checkers judge the history,
what clients saw, rather than what the subject says about itself.

Everything a scenario or a subject needs is importable from here; the names load
their modules on first use, so the plugin itself stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_operator._actions import (
        Action,
        ActionError,
        ActionRunner,
        Approver,
        AuditEntry,
        Decision,
        NotApplied,
        Param,
        Risk,
        TerminalPrompt,
    )
    from pytest_operator._anomalies import Anomaly, AnomalyKind
    from pytest_operator._cassette import Cassette, CassetteMiss
    from pytest_operator._causal import CausalEngine
    from pytest_operator._causes import FaultKind, RootCause, split_cause
    from pytest_operator._chaos import (
        ChaosUnsupported,
        Fault,
        HealError,
        Injection,
        bandwidth,
        blackhole,
        clock_skew,
        compose,
        isolate,
        kill,
        latency,
        misconfigure,
        partition,
        pause,
        reset_peer,
        restart_with_data_loss,
        split,
        split_minority,
        split_no_quorum,
    )
    from pytest_operator._checkers import (
        Availability,
        AvailabilityReport,
        ClientSeen,
        Latency,
        LatencyReport,
        SpanExcess,
        WindowCount,
        availability,
        client_seen,
        max_in_window,
        max_over_rate,
    )
    from pytest_operator._claude import ClaudeEngine, ClaudeResponseError
    from pytest_operator._cluster import (
        CLIENT,
        MAIN,
        Address,
        Addresses,
        ClusterError,
        ClusterSpec,
        ComponentSpec,
        EmbeddedCluster,
        HttpReady,
        LinkSpec,
        ReadyCheck,
        TcpReady,
        mesh_links,
    )
    from pytest_operator._diagnosis import Diagnosis, EngineUnavailable, Hypothesis
    from pytest_operator._history import EpochClock, History, Op, OpKind, Outcome
    from pytest_operator._invariants import (
        Category,
        Finding,
        Invariant,
        Violation,
        history_invariant,
    )
    from pytest_operator._linearizable import (
        CheckResult,
        LinearizabilityWatch,
        Model,
        Register,
    )
    from pytest_operator._linearizable import check as check_linearizable
    from pytest_operator._live import LiveView
    from pytest_operator._monitor import MonitorRun
    from pytest_operator._process import free_ports, free_ports_at, process_start_time
    from pytest_operator._remediation import NotRecovered, Recovery, Remediation, Step
    from pytest_operator._selectors import Selector, follower, leader
    from pytest_operator._signals import (
        ComponentSignals,
        Divergence,
        Fact,
        LinkSignals,
        Observation,
        ProbeFailure,
        Role,
        SafetyViolation,
    )
    from pytest_operator._subject import ClusterView, Subject, SubjectConfig, SubjectSession
    from pytest_operator._topology import Component, ComponentKind, Link, Topology
    from pytest_operator._workload import (
        Call,
        KeyChooser,
        LatenessStats,
        OpMix,
        Pattern,
        RegisterOps,
        Requester,
        Requests,
        Response,
        Workload,
        boundary_burst,
        burst,
        hot,
        ramp,
        register_ops,
        requests,
        steady,
        uniform,
        zipf,
    )

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "Action",
            "ActionError",
            "ActionRunner",
            "Approver",
            "AuditEntry",
            "Decision",
            "NotApplied",
            "Param",
            "Risk",
            "TerminalPrompt",
        ),
        "_actions",
    ),
    "CausalEngine": "_causal",
    "LiveView": "_live",
    **dict.fromkeys(("Cassette", "CassetteMiss"), "_cassette"),
    **dict.fromkeys(("ClaudeEngine", "ClaudeResponseError"), "_claude"),
    **dict.fromkeys(
        (
            "CLIENT",
            "MAIN",
            "Address",
            "Addresses",
            "ClusterError",
            "ClusterSpec",
            "ComponentSpec",
            "EmbeddedCluster",
            "HttpReady",
            "LinkSpec",
            "ReadyCheck",
            "TcpReady",
            "mesh_links",
        ),
        "_cluster",
    ),
    **dict.fromkeys(("free_ports", "free_ports_at", "process_start_time"), "_process"),
    **dict.fromkeys(("Selector", "follower", "leader"), "_selectors"),
    **dict.fromkeys(("FaultKind", "RootCause", "split_cause"), "_causes"),
    **dict.fromkeys(("NotRecovered", "Recovery", "Remediation", "Step"), "_remediation"),
    **dict.fromkeys(
        (
            "Availability",
            "AvailabilityReport",
            "ClientSeen",
            "Latency",
            "LatencyReport",
            "SpanExcess",
            "WindowCount",
            "availability",
            "client_seen",
            "max_in_window",
            "max_over_rate",
        ),
        "_checkers",
    ),
    **dict.fromkeys(
        (
            "ChaosUnsupported",
            "Fault",
            "HealError",
            "Injection",
            "bandwidth",
            "blackhole",
            "clock_skew",
            "compose",
            "isolate",
            "kill",
            "latency",
            "misconfigure",
            "partition",
            "pause",
            "reset_peer",
            "restart_with_data_loss",
            "split",
            "split_minority",
            "split_no_quorum",
        ),
        "_chaos",
    ),
    **dict.fromkeys(("Diagnosis", "EngineUnavailable", "Hypothesis"), "_diagnosis"),
    **dict.fromkeys(("EpochClock", "History", "Op", "OpKind", "Outcome"), "_history"),
    **dict.fromkeys(
        ("Category", "Finding", "Invariant", "Violation", "history_invariant"), "_invariants"
    ),
    **dict.fromkeys(("Anomaly", "AnomalyKind"), "_anomalies"),
    **dict.fromkeys(("CheckResult", "LinearizabilityWatch", "Model", "Register"), "_linearizable"),
    "check_linearizable": "_linearizable:check",
    "MonitorRun": "_monitor",
    **dict.fromkeys(
        (
            "ComponentSignals",
            "Divergence",
            "Fact",
            "LinkSignals",
            "Observation",
            "ProbeFailure",
            "Role",
            "SafetyViolation",
        ),
        "_signals",
    ),
    **dict.fromkeys(("ClusterView", "Subject", "SubjectConfig", "SubjectSession"), "_subject"),
    **dict.fromkeys(("Component", "ComponentKind", "Link", "Topology"), "_topology"),
    **dict.fromkeys(
        (
            "Call",
            "KeyChooser",
            "LatenessStats",
            "OpMix",
            "Pattern",
            "RegisterOps",
            "Requester",
            "Requests",
            "Response",
            "Workload",
            "boundary_burst",
            "burst",
            "hot",
            "ramp",
            "register_ops",
            "requests",
            "steady",
            "uniform",
            "zipf",
        ),
        "_workload",
    ),
}

__all__ = [
    "CLIENT",
    "MAIN",
    "Action",
    "ActionError",
    "ActionRunner",
    "Address",
    "Addresses",
    "Anomaly",
    "AnomalyKind",
    "Approver",
    "AuditEntry",
    "Availability",
    "AvailabilityReport",
    "Call",
    "Cassette",
    "CassetteMiss",
    "Category",
    "CausalEngine",
    "ChaosUnsupported",
    "CheckResult",
    "ClaudeEngine",
    "ClaudeResponseError",
    "ClientSeen",
    "ClusterError",
    "ClusterSpec",
    "ClusterView",
    "Component",
    "ComponentKind",
    "ComponentSignals",
    "ComponentSpec",
    "Decision",
    "Diagnosis",
    "Divergence",
    "EmbeddedCluster",
    "EngineUnavailable",
    "EpochClock",
    "Fact",
    "Fault",
    "FaultKind",
    "Finding",
    "HealError",
    "History",
    "HttpReady",
    "Hypothesis",
    "Injection",
    "Invariant",
    "KeyChooser",
    "Latency",
    "LatencyReport",
    "LatenessStats",
    "LinearizabilityWatch",
    "Link",
    "LinkSignals",
    "LinkSpec",
    "LiveView",
    "Model",
    "MonitorRun",
    "NotApplied",
    "NotRecovered",
    "Observation",
    "Op",
    "OpKind",
    "OpMix",
    "Outcome",
    "Param",
    "Pattern",
    "ProbeFailure",
    "ReadyCheck",
    "Recovery",
    "Register",
    "RegisterOps",
    "Remediation",
    "Requester",
    "Requests",
    "Response",
    "Risk",
    "Role",
    "RootCause",
    "SafetyViolation",
    "Selector",
    "SpanExcess",
    "Step",
    "Subject",
    "SubjectConfig",
    "SubjectSession",
    "TcpReady",
    "TerminalPrompt",
    "Topology",
    "Violation",
    "WindowCount",
    "Workload",
    "availability",
    "bandwidth",
    "blackhole",
    "boundary_burst",
    "burst",
    "check_linearizable",
    "client_seen",
    "clock_skew",
    "compose",
    "follower",
    "free_ports",
    "free_ports_at",
    "history_invariant",
    "hot",
    "isolate",
    "kill",
    "latency",
    "leader",
    "max_in_window",
    "max_over_rate",
    "mesh_links",
    "misconfigure",
    "partition",
    "pause",
    "process_start_time",
    "ramp",
    "register_ops",
    "requests",
    "reset_peer",
    "restart_with_data_loss",
    "split",
    "split_cause",
    "split_minority",
    "split_no_quorum",
    "steady",
    "uniform",
    "zipf",
]


def __getattr__(name: str) -> object:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'pytest_operator' has no attribute {name!r}")
    module, _, attr = where.partition(":")  # "module:attr" exports attr under another name
    value = getattr(importlib.import_module(f"pytest_operator.{module}"), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
