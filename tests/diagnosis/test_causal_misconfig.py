"""The causal engine on misconfigurations: real cases captured from
``scenarios/test_remediate_misconfigured_limit.py`` (run1: three nodes; run2: ``--nodes 5``)
and the rule that tells a configuration changed under the traffic from an overload.

In each case the subject declared a limit, a workload ran, and mid-run a configuration
change reached every service (a key switched to fixed_window under a burst at the window
edge, or its limit raised under steady traffic). The services report when their
configuration last changed (``ComponentSignals.config_changed_at``) and the observation
says when the clients' traffic began (``Observation.clients_since``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_operator._causal import CausalEngine
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._diagnosis import Case
from pytest_operator._serde import case_from_json

HERE = Path(__file__).parent
FOLDER = HERE / "misconfig-cases"
CASES = sorted(FOLDER.glob("*/*.json"))
MISCONFIGURATION = RootCause(FaultKind.MISCONFIGURATION, "client")
OVERLOAD = RootCause(FaultKind.OVERLOAD, "client")


def load(path: Path) -> Case:
    return case_from_json(path.read_text())


def with_changes(case: Case, change: float | None) -> Case:
    """The case with every reported configuration change moved to ``change`` (None: no
    change reported)."""
    return dataclasses.replace(
        case,
        observations=tuple(
            dataclasses.replace(
                o,
                components=tuple(
                    dataclasses.replace(
                        c, config_changed_at=None if c.config_changed_at is None else change
                    )
                    for c in o.components
                ),
            )
            for o in case.observations
        ),
    )


def clients_since(case: Case) -> float:
    return min(o.clients_since for o in case.observations if o.clients_since is not None)


def test_the_cases_cover_the_variants_on_three_and_five_nodes() -> None:
    names = {p.name.split("-trial")[0] for p in CASES}
    assert len(CASES) == 8 and len(names) == 4
    sizes = set()
    for path in CASES:
        case = load(path)
        sizes.add(sum(1 for c in case.topology.components if c.name.startswith("node-")))
        assert any(c.config_changed_at for o in case.observations for c in o.components)
        assert all(o.clients_since is not None for o in case.observations)
    assert sizes == {3, 5}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name[:60]}")
def test_a_configuration_changed_under_the_traffic_is_ranked_first(path: Path) -> None:
    d = CausalEngine().diagnose_now(load(path))
    assert d.rank_of(MISCONFIGURATION) == 1, d.top_causes()
    assert d.top is not None and d.top.score >= 6
    texts = [e.text for e in d.top.evidence_for]
    assert any(t.startswith("configuration changed on") for t in texts), texts
    overload = d.rank_of(OVERLOAD)
    assert overload is None or overload > 1
    # the remedy: the catalogue's cluster-wide action that declares it fixes a
    # misconfiguration (no target, no parameter), never read by name
    assert [(r.action, r.args) for r in d.recommendations] == [("restore_limits", ())]


BURSTS = [p for p in CASES if "raised" not in p.name]


@pytest.mark.parametrize("path", BURSTS, ids=lambda p: f"{p.parent.name}/{p.name[:60]}")
def test_without_the_change_the_burst_reads_as_overload_or_a_tie(path: Path) -> None:
    """What the configuration change is worth: the same timeline with no change reported
    (the fixed-window burst scenario's situation) does not rank the misconfiguration
    above the overload its spike suggests."""
    case = load(path)
    d = CausalEngine().diagnose_now(with_changes(case, None))
    scores = {h.cause: h.score for h in d.hypotheses}
    assert scores.get(OVERLOAD, 0.0) >= scores.get(MISCONFIGURATION, 0.0), d.top_causes()


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name[:60]}")
def test_a_configuration_set_before_the_workload_began_is_no_evidence(path: Path) -> None:
    """A reset between tests rewrites the configuration just before the workload starts:
    such a change, or one after safety broke, ranks exactly as no change at all."""
    case = load(path)
    engine = CausalEngine()
    unchanged = engine.diagnose_now(with_changes(case, None))
    before = engine.diagnose_now(with_changes(case, clients_since(case) - 0.05))
    broke = min(o.at for o in case.observations if o.safety)
    after = engine.diagnose_now(with_changes(case, broke + 0.05))
    ranking = [(h.cause, h.score) for h in unchanged.hypotheses]
    assert [(h.cause, h.score) for h in before.hypotheses] == ranking
    assert [(h.cause, h.score) for h in after.hypotheses] == ranking


def test_a_change_on_a_minority_of_the_services_is_no_evidence() -> None:
    path = next(p for p in BURSTS if p.parent.name == "run1")
    case = load(path)
    nodes = [c.name for c in case.topology.components if c.name.startswith("node-")]
    one = nodes[0]
    at = max(c.config_changed_at or 0.0 for o in case.observations for c in o.components)
    minority = dataclasses.replace(
        case,
        observations=tuple(
            dataclasses.replace(
                o,
                components=tuple(
                    dataclasses.replace(c, config_changed_at=at if c.component == one else None)
                    for c in o.components
                ),
            )
            for o in case.observations
        ),
    )
    unchanged = CausalEngine().diagnose_now(with_changes(case, None))
    d = CausalEngine().diagnose_now(minority)
    assert [(h.cause, h.score) for h in d.hypotheses] == [
        (h.cause, h.score) for h in unchanged.hypotheses
    ]
