"""Cases and diagnoses as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_operator._causal import CausalEngine
from pytest_operator._serde import case_from_json, case_to_json, diagnosis_to_json

CASES = Path(__file__).parents[1] / "diagnosis" / "cases"


def test_real_cases_round_trip_exactly() -> None:
    files = sorted(CASES.glob("*.json"))
    assert files
    for f in files:
        text = f.read_text().strip()
        case = case_from_json(text)
        assert case_to_json(case) == text
        assert case_from_json(case_to_json(case)) == case


def test_diagnosis_json_names_causes_and_evidence() -> None:
    case = case_from_json(next(CASES.glob("test_killed_node*.json")).read_text())
    doc = json.loads(diagnosis_to_json(CausalEngine().diagnose_now(case)))
    top = doc["hypotheses"][0]
    assert top["cause"] == {"kind": "crash", "component": "node-1", "peer": None}
    assert top["evidence_for"][0]["text"].startswith("node-1 refused the monitor's probe")
