"""The node's OpenAPI document describes its real API: schemathesis, every check, a real node.

schemathesis (a dev dependency) reads ``/openapi.json`` from the node and sends what the
document allows and what it forbids, to every operation, then checks each answer
against the document: status codes, content types, headers, bodies, 405 with Allow,
bad input rejected, valid input accepted, authentication, and stateful sequences
(PUT then GET then DELETE). Its JSON report is read so the test cannot pass without
having tested every operation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Node, RedisServer, StartNode

TOKEN = "openapi-token"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 25
SEED = 1
RUN_TIMEOUT_S = 120  # a run takes ~10 s on a loaded 2-core machine; this is the hang bound


@dataclass(frozen=True, slots=True)
class Run:
    returncode: int
    output: str
    report: dict[str, object]


def _schemathesis(node: Node, tmp_path: Path, token: str | None) -> Run:
    report_path = tmp_path / "report.json"
    argv = [
        str(SCHEMATHESIS), "run", f"{node.url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "5",
        "--generation-database", "none",
        "--no-color",
        "--report", "json", "--report-json-path", str(report_path),
    ]  # fmt: skip
    if token is not None:
        argv += ["--header", f"Authorization: Bearer {token}"]
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    output = done.stdout + done.stderr
    assert report_path.exists(), f"schemathesis wrote no report:\n{output}"
    return Run(done.returncode, output, json.loads(report_path.read_text()))


def _operations(node: Node) -> int:
    document = httpx.get(f"{node.url}/openapi.json", timeout=5).json()
    return sum(len(methods) for methods in document["paths"].values())


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "open"])
def test_schemathesis_finds_nothing(
    module_redis: RedisServer,
    start_node: StartNode,
    tmp_path: Path,
    token: str | None,
) -> None:
    options: dict[str, str | int] = {"default_limit": 50} | ({"token": token} if token else {})
    node = start_node(f"openapi-{'token' if token else 'open'}", module_redis.url, **options)
    run = _schemathesis(node, tmp_path, token)
    report = run.report
    assert run.returncode == 0, run.output
    assert report["exit_code"] == 0, run.output
    assert report["failures"] == [] and report["errors"] == [], run.output
    # it did test: every operation of the document, through every phase, many cases each
    operations = report["operations"]
    assert isinstance(operations, dict)
    expected = _operations(node)
    assert expected == 11
    assert operations["tested"] == operations["total"] == expected, run.output
    phases = report["phases"]
    assert isinstance(phases, dict)
    for phase in ("coverage", "fuzzing", "stateful"):
        assert phases[phase]["status"] == "success", (phase, run.output)
    cases = report["test_cases"]
    assert isinstance(cases, dict)
    assert cases["generated"] >= expected * MAX_EXAMPLES // 2, run.output
    # nothing of the document was left unused (a dropped key pattern would go unchecked)
    warnings = report["warnings"]
    assert isinstance(warnings, dict)
    assert {name: found for name, found in warnings.items() if found} == {}, run.output
    assert "Server error" not in run.output
