"""pytest-operator: chaos and verification of distributed systems, as pytest tests.

The model, after Jepsen: a *cluster* of the subject runs as real processes; a
*workload* drives traffic at it on an open-loop schedule and records every
request in a *history*; *chaos* injects a fault (a cut or slowed link, a killed
or frozen process, a skewed clock) and always heals it; a *monitor* loop polls
the subject's observations and checks its invariants into a timeline; a
*diagnosis* engine ranks root causes from the topology and the timeline; and
the test asserts the fault was detected and named. Checkers judge the history,
what clients saw, rather than what the subject says about itself.
"""

from __future__ import annotations

from pytest_operator._causes import FaultKind, RootCause

__all__ = ["FaultKind", "RootCause"]
