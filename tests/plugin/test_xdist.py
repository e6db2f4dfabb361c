"""Scenarios in parallel with pytest-xdist (``-n 2``): one real run of two scenarios,
two trials each, on two workers (a pytest subprocess against real embedded clusters).
Each worker runs its own cluster; the controller prints one summary and writes the
accuracy JSON and the Allure run files once, over every worker's results."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import execnet
import pytest

from pytest_operator._accuracy import CaseResult
from pytest_operator._allure import ACCURACY_FILE
from pytest_operator._results import REPORT_ATTR, ScenarioReport, ScenarioResult
from pytest_operator._serde import from_data, to_data
from tests.report.conftest import INI, ROOT, run_group

SCENARIOS = """\
import os
import pytest
from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


def record(cluster):
    # one line per test: which worker ran it, that worker's PID and its cluster's run dir
    line = f"{os.environ['PYTEST_XDIST_WORKER']} {os.getpid()} {cluster.run_dir.path}\\n"
    with open(CLUSTERS, "a") as out:
        out.write(line)


@pytest.mark.chaos(kill("node-1"))
async def test_killed_node_is_diagnosed(operator, workload, cluster):
    record(cluster)
    await workload.start(steady(rate=50), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", component="node-1")
    await operator.assert_diagnosis(run)


async def test_quiet_control(operator, workload, cluster):
    record(cluster)
    await workload.start(steady(rate=30), keys="k2")
    run = await operator.monitor(timeout=1.0)
    run.assert_no_violation()
    await operator.assert_no_fault_diagnosed(run)
"""

KILL = "test_killed_node_is_diagnosed"
CONTROL = "test_quiet_control"
ITEMS = [f"{name}[trial{t}]" for name in (KILL, CONTROL) for t in (1, 2)]
"""In collection order: four items, so xdist sends two consecutive ones to each worker."""


def xdist_free_env() -> dict[str, str]:
    """This environment without the variables of an xdist worker (the suite itself may
    run under xdist), with the project's tools on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env["PATH"] = f"{ROOT / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("GITHUB_ACTIONS", None)
    return env


@dataclass(frozen=True, slots=True)
class ParallelRun:
    where: Path
    clusters: Path
    """PYTEST_OPERATOR_RUN_DIR of the run: every cluster's run directory."""
    stdout: str
    returncode: int

    @property
    def results(self) -> Path:
        return self.where / "allure-results"


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory) -> ParallelRun:
    where = tmp_path_factory.mktemp("xdist-run")
    (where / "pytest.ini").write_text(INI)
    record = where / "clusters.txt"
    source = f"CLUSTERS = {str(record)!r}\n" + textwrap.dedent(SCENARIOS)
    (where / "test_pair.py").write_text(source)
    env = xdist_free_env()
    env["PYTEST_OPERATOR_RUN_DIR"] = str(where / "clusters")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--trials=2"]
    cmd += ["--alluredir=allure-results", "--clean-alluredir", "test_pair.py"]
    proc = run_group(cmd, cwd=where, env=env, timeout=300)
    return ParallelRun(where, where / "clusters", proc.stdout + proc.stderr, proc.returncode)


@pytest.fixture(scope="module")
def run(parallel: ParallelRun) -> ParallelRun:
    assert parallel.returncode == 0, parallel.stdout[-3000:]
    assert "4 passed" in parallel.stdout, parallel.stdout[-3000:]
    return parallel


@pytest.mark.slow
def test_one_summary_covers_both_workers_in_collection_order(run: ParallelRun) -> None:
    out = run.stdout
    assert out.count("operator: scenarios") == 1, out[-3000:]
    assert out.count("operator: diagnosis accuracy") == 1, out[-3000:]
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "operator: scenarios" in line)
    summary = lines[start + 1 : start + 1 + len(ITEMS)]
    assert [line.split()[1] for line in summary] == ITEMS, "\n".join(summary)
    for line in summary[:2]:
        assert re.match(r"passed +\S+ +detected=node_down@node-1 ttd=[\d.]+ s rank=causal:1$", line)
    for line in summary[2:]:
        assert re.match(r"passed +\S+ +detected=nothing ttd=- rank=causal:-$", line)
    # two fault cases and two controls: the table is the whole run's, not one worker's
    assert re.search(r"^causal +2 +100% +100% +100% +2 +0% ", out, re.MULTILINE), out[-3000:]


@pytest.mark.slow
def test_accuracy_and_scenario_files_hold_every_case(run: ParallelRun) -> None:
    accuracy = json.loads((run.where / ".run" / "accuracy.json").read_text())
    cases = [(c["scenario"].split("::")[-1], c["trial"]) for c in accuracy["cases"]]
    assert cases == [(item, int(item[-2])) for item in ITEMS]
    (causal,) = [s for s in accuracy["summary"] if s["engine"] == "causal"]
    assert (causal["cases"], causal["controls"], causal["ac1"]) == (2, 2, 1.0)
    scenarios = json.loads((run.where / ".run" / "scenarios.json").read_text())
    assert [s["scenario"].split("::")[-1] for s in scenarios] == ITEMS
    written = sorted(p.name for p in (run.where / ".run" / "cases").iterdir())
    assert written == sorted(
        f"test_pair-{name}_trial{t}_-trial{t}.json" for name in (KILL, CONTROL) for t in (1, 2)
    )


@pytest.mark.slow
def test_each_worker_ran_its_own_cluster(run: ParallelRun) -> None:
    rows = [line.split() for line in (run.where / "clusters.txt").read_text().splitlines()]
    assert len(rows) == len(ITEMS)
    by_worker: dict[str, set[tuple[str, str]]] = {}
    for worker, pid, run_dir in rows:
        by_worker.setdefault(worker, set()).add((pid, run_dir))
    assert sorted(by_worker) == ["gw0", "gw1"]
    # both trials of a scenario on one worker share its cluster; the workers' differ
    owners = {w: next(iter(seen)) for w, seen in by_worker.items() if len(seen) == 1}
    assert len(owners) == 2, by_worker
    (pid0, dir0), (pid1, dir1) = owners.values()
    assert pid0 != pid1 and dir0 != dir1
    for pid, run_dir in owners.values():
        path = Path(run_dir)
        assert path.parent == run.clusters
        assert f"-{pid}-" in path.name
        assert (path / "owner.run").read_text().split()[0] == pid
        assert (path / "redis.log").is_file() and (path / "toxiproxy.log").is_file()
    assert sorted(p.name for p in run.clusters.iterdir()) == sorted(
        Path(d).name for _, d in owners.values()
    )


@pytest.mark.slow
def test_allure_results_hold_every_test_and_the_run_files_once(run: ParallelRun) -> None:
    results = [json.loads(p.read_text()) for p in run.results.glob("*-result.json")]
    assert sorted(r["name"] for r in results) == sorted(ITEMS)
    assert {r["status"] for r in results} == {"passed"}
    # each writer of the run's files would add a globals file (the accuracy table)
    (globals_file,) = run.results.glob("*-globals.json")
    (attachment,) = json.loads(globals_file.read_text())["attachments"]
    assert attachment["name"] == "diagnosis accuracy"
    table = (run.results / attachment["source"]).read_text()
    assert re.search(r"^causal +2 +100% +100% +100% +2 +0% ", table, re.MULTILINE), table
    accuracy = json.loads((run.results / ACCURACY_FILE).read_text())
    assert len(accuracy["cases"]) == len(ITEMS)
    env = (run.results / "environment.properties").read_text().splitlines()
    # the controller collected nothing: it learnt the marked subject from its workers
    assert "subject=ratelimiter" in env and "trials=2" in env
    assert [c["name"] for c in json.loads((run.results / "categories.json").read_text())]
    assert json.loads((run.results / "executor.json").read_text())["type"] == "local"


@pytest.mark.slow
def test_a_restarted_worker_leaves_the_alluredir_alone(tmp_path: Path) -> None:
    """xdist replaces a crashed worker; the new one must not clean --alluredir again."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_crash.py").write_text(
        "import os\n\n"
        "def test_before():\n    pass\n\n"
        "def test_crash():\n    os._exit(1)\n\n"
        "def test_after():\n    pass\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "1"]
    cmd += ["--alluredir=res", "--clean-alluredir", "test_crash.py"]
    proc = run_group(cmd, cwd=tmp_path, env=xdist_free_env(), timeout=120)
    assert "worker 'gw0' crashed while running 'test_crash.py::test_crash'" in proc.stdout
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout[-2000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*-result.json")]
    assert sorted(r["name"] for r in results) == ["test_after", "test_before"]


@pytest.mark.parametrize("worker", [False, True], ids=["one-process", "xdist-worker"])
def test_scenario_results_travel_on_the_report(pytestconfig: pytest.Config, worker: bool) -> None:
    """What a worker attaches to a report comes out equal on the controller: through
    pytest's report serialisation and execnet's (which takes no dataclass or set)."""
    nodeid = "s.py::test_x[trial2]"
    sent = ScenarioReport(
        order=3,
        subject="ratelimiter",
        scenario=ScenarioResult(
            scenario=nodeid,
            trial=2,
            outcome="failed",
            expected="crash(node-1)",
            detected="node_down@node-1",
            time_to_detect=0.75,
            ranks=(("causal", None), ("claude", 2)),
        ),
        cases=(
            CaseResult(nodeid, 2, "causal", "crash(node-1)", (), None, 0.75, 0.25),
            CaseResult(
                nodeid,
                2,
                "claude",
                "crash(node-1)",
                ("pause(node-1)", "crash(node-1)"),
                2,
                time_to_detect=None,
                time_to_diagnose=1,
                input_tokens=1200,
                output_tokens=80,
            ),
        ),
    )
    report = pytest.TestReport(nodeid, ("s.py", 1, "test_x"), {}, "failed", None, "call")
    setattr(report, REPORT_ATTR, to_data(sent))
    hook = pytestconfig.hook
    data = hook.pytest_report_to_serializable(config=pytestconfig, report=report)
    if worker:
        data = execnet.loads(execnet.dumps(data))
    received = hook.pytest_report_from_serializable(config=pytestconfig, data=data)
    assert from_data(ScenarioReport, getattr(received, REPORT_ATTR)) == sent


def test_recording_a_cassette_in_parallel_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--claude-record=c.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--claude-record=c.json records in one process: each xdist worker would rewrite"
            " the cassette with its own answers only; record without -n (replaying runs in"
            " parallel)*"
        ]
    )
    assert not (pytester.path / "c.json").exists()
