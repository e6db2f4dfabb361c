"""A consistency check lands in Allure: a pytest subprocess with ``--alluredir`` against
a real etcd cluster checks its history once as it is (valid) and once with a stale read
added by hand (the report path is under test here, not etcd), and each result carries
the verdict as JSON and, for the anomaly, the stretch as a PNG."""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.report.conftest import INI, ROOT, run_group

pytestmark = pytest.mark.slow

SCENARIOS = """\
import dataclasses

import pytest
from pytest_operator import OpKind, Outcome, steady

pytestmark = pytest.mark.subject("etcd")


async def test_a_valid_history(operator, workload):
    await workload.start(steady(rate=40), keys=["a", "b"])
    await operator.monitor(timeout=1.5)
    await workload.stop()
    result = operator.check_history()
    assert result.valid, result.summary()


async def test_a_stale_read_added_by_hand(operator, workload, history):
    await workload.start(steady(rate=40), keys=["a"])
    await operator.monitor(timeout=1.5)
    await workload.stop()
    writes = [op for op in history.ops
              if op.kind == OpKind.WRITE and op.outcome is Outcome.OK]
    first, last = writes[0], max(writes, key=lambda op: op.recv)
    stale = dataclasses.replace(
        first, index=10_000, kind=OpKind.READ, value=None, result=first.value,
        send=last.recv + 0.01, scheduled=last.recv + 0.01, recv=last.recv + 0.02,
    )
    history.append(stale)
    result = operator.check_history()
    assert not result.valid
    assert result.anomalies[0].culprit.index == 10_000
"""


def _result(results: Path, name: str) -> dict[str, Any]:
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text())
        if data["name"] == name:
            return data  # type: ignore[no-any-return]
    raise AssertionError(f"no Allure result for {name} in {results}")


def test_consistency_checks_are_attached(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_checks.py").write_text(textwrap.dedent(SCENARIOS))
    results = tmp_path / "allure-results"
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    proc = run_group(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--alluredir={results}"],
        cwd=tmp_path,
        env=env,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]

    valid = _result(results, "test_a_valid_history")
    (check,) = [a for a in valid["attachments"] if a["name"].startswith("register check")]
    assert check["name"] == "register check: valid.json"
    assert check["type"] == "application/json"
    verdict = json.loads((results / check["source"]).read_text())
    assert verdict["valid"] is True and verdict["ops"] > 20 and verdict["anomalies"] == []

    stale = _result(results, "test_a_stale_read_added_by_hand")
    names = {a["name"]: a for a in stale["attachments"]}
    verdict = json.loads((results / names["register check: NOT valid.json"]["source"]).read_text())
    (anomaly,) = verdict["anomalies"]
    assert anomaly["culprit"]["index"] == 10_000 and anomaly["key"] == "a"
    picture = names[f"{anomaly['kind']} on a"]
    assert picture["type"] == "image/png"
    image = Image.open(io.BytesIO((results / picture["source"]).read_bytes()))
    assert image.format == "PNG" and image.width >= 400 and image.height >= 200
