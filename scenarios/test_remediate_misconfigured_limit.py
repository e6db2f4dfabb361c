"""A misconfiguration found and fixed: the subject declares k1's limit by sliding_log,
which holds a burst at the window edge; mid-run, k1 is switched to fixed_window on every
node and left so. The burst now over-admits at each edge (ghost allowing); the operator
diagnoses a misconfiguration (the nodes report the change, after the traffic began and
before safety broke: not an overload, though the traffic spikes), applies the declared
limit again through the catalogue (approved by the scenario's approver, as a person
would), and the same burst is held again for several window edges in a row.

Variants (the diagnosis must generalise): another key, another limit and window, and a
misconfiguration that raises the limit instead (over-admission with no burst at all).
Run with ``--nodes 5`` for five nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from pytest_operator import Action, FaultKind, boundary_burst, misconfigure, steady
from pytest_operator._history import Outcome
from pytest_operator._workload import Pattern

pytestmark = pytest.mark.subject("ratelimiter", algorithm="sliding_log", limit=50)

SUSTAIN = 4.0
"""Seconds the fixed limit must hold the traffic: four window edges of a 1 s window."""
WITHIN = 15.0


async def approve_fixes(action: Action, args: object) -> bool:
    return FaultKind.MISCONFIGURATION in action.remedies


@dataclass(frozen=True)
class Variant:
    key: str
    pattern: Pattern
    change: Mapping[str, object]
    """update_limit's arguments besides the key: what the misconfiguration sets."""
    declared: tuple[int, int, str]


def burst(window_ms: int, limit: int) -> Pattern:
    # long enough to span the whole test (bounded by its count of edges, so in time)
    return boundary_burst(
        window_ms=window_ms, count=2 * limit, spread_ms=window_ms / 10, edges=30, lead_ms=50
    )


MAIN = Variant(
    "k1",
    burst(1000, 50),
    {"limit": 50, "window_ms": 1000, "algorithm": "fixed_window"},
    (50, 1000, "sliding_log"),
)


async def misconfigured_then_fixed(operator, chaos, workload, subject, v: Variant) -> None:
    actions = {a.name: a for a in subject.actions}
    await workload.start(v.pattern, keys=v.key)
    # the declared limit meets the traffic first (an edge held), then the change lands
    await asyncio.sleep(1.5)
    change = (actions["update_limit"], {"key": v.key, **v.change})
    injection = await chaos.leave(
        misconfigure(change, revert=(actions["restore_limits"], {}), what=f"{v.key}: {v.change}")
    )
    run = await operator.monitor(until="ghost_allowing", timeout=20)
    violation = run.assert_detected("ghost_allowing")
    assert violation.value is not None and violation.value > v.declared[0]
    await operator.assert_diagnosis(run)  # the injected cause: a misconfiguration

    operator.actions.approver = approve_fixes
    remediation = await operator.remediate(run)
    assert [(s.action, s.args, s.outcome) for s in remediation.steps] == [
        ("restore_limits", (), "ok")
    ]
    recovery = await operator.assert_recovered(remediation, within=WITHIN, sustain=SUSTAIN)
    assert 0 <= recovery.time_to_recover <= WITHIN
    assert injection.left_in_place and injection.active  # nothing but the operator fixed it

    # the traffic went on through the sustained stretch, and the limit held it
    stretch = [
        op
        for op in workload.history.ops
        if op.key == v.key
        and recovery.recovered_at <= op.send <= recovery.recovered_at + recovery.sustained
    ]
    assert any(op.outcome is Outcome.OK for op in stretch), "traffic was admitted"
    assert any(op.outcome is Outcome.REJECTED for op in stretch), "and held at the limit"

    # read back from the nodes: every node applies the declared limit again
    deadline = time.monotonic() + 5.0
    while (seen := await subject.limit_on_nodes(v.key)) != dict.fromkeys(
        subject.targets, v.declared
    ):
        assert time.monotonic() < deadline, f"nodes apply {seen}, declared {v.declared}"
        await asyncio.sleep(0.1)
    assert [e.outcome for e in operator.actions.audit] == ["ok"]


async def test_fixed_window_misconfiguration_is_fixed_by_the_operator_and_the_burst_held(
    operator, chaos, workload, subject
):
    await misconfigured_then_fixed(operator, chaos, workload, subject, MAIN)


VARIANTS = [
    pytest.param(
        Variant(
            "acct-7",
            burst(1000, 50),
            {"limit": 50, "window_ms": 1000, "algorithm": "fixed_window"},
            (50, 1000, "sliding_log"),
        ),
        id="another-key",
    ),
    pytest.param(
        Variant(
            "k1",
            burst(500, 20),
            {"limit": 20, "window_ms": 500, "algorithm": "fixed_window"},
            (20, 500, "sliding_log"),
        ),
        marks=pytest.mark.subject("ratelimiter", algorithm="sliding_log", limit=20, window_ms=500),
        id="limit-20-per-500ms",
    ),
    pytest.param(
        Variant(
            "k1",
            steady(rate=100, duration=30),
            {"limit": 200, "window_ms": 1000},
            (50, 1000, "sliding_log"),
        ),
        id="limit-raised-no-burst",
    ),
]


@pytest.mark.parametrize("variant", VARIANTS)
async def test_misconfiguration_variant_is_diagnosed_and_fixed(
    operator, chaos, workload, subject, variant: Variant
):
    await misconfigured_then_fixed(operator, chaos, workload, subject, variant)
