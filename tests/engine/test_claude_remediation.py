"""The Claude engine proposes actions; the remediation loop runs what is in the catalogue
and refuses (and audits) what is not, never running it.

Offline: each Messages API answer is a hand-written recording in
tests/diagnosis/responses/ (the shape the API sends; no test here talks to the API),
served through the SDK's ``http_client`` with ``httpx2.MockTransport``. The catalogue's
one action is real: it starts a real process (``sleep``, in its own session), so
"run" and "never run" are seen on the machine, not in a mock's call list.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from pytest_operator._actions import Action, ActionRunner, Args, Decision, Param, Risk
from pytest_operator._cassette import Cassette
from pytest_operator._causes import FaultKind
from pytest_operator._claude import ClaudeEngine
from pytest_operator._diagnosis import Case, Diagnosis
from pytest_operator._operator import action_info
from pytest_operator._prompt import FENCE_CLOSE, FENCE_OPEN
from pytest_operator._remediation import NotRecovered, remediate, wait_recovered
from pytest_operator._serde import case_from_json
from pytest_operator._signals import Observation

DIAGNOSIS = Path(__file__).parents[1] / "diagnosis"
RESPONSES = DIAGNOSIS / "responses"
CRASH_CASE = (
    DIAGNOSIS / "cases" / "test_killed_node_is_detected_and_diagnosed_as_a_crash-trial1.json"
)
MODEL = "claude-opus-5"
NODES = ("node-1", "node-2", "node-3")


@dataclass
class Nodes:
    """The real processes the catalogue's action started, by node."""

    started: list[tuple[str, asyncio.subprocess.Process]] = field(default_factory=list)

    async def restart(self, args: Args) -> str:
        proc = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
        self.started.append((str(args["node"]), proc))
        return f"{args['node']} started as pid {proc.pid}"

    async def stop_all(self) -> None:
        for _, proc in self.started:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
            await asyncio.wait_for(proc.wait(), timeout=30)


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    n = Nodes()
    try:
        yield n
    finally:
        await n.stop_all()


@dataclass
class Approver:
    """Approves every action it is asked about (restart_node is high risk), and counts."""

    asked: list[str] = field(default_factory=list)
    name: str = "test approver"

    async def __call__(self, action: Action, args: Args) -> bool:
        self.asked.append(action.name)
        return True


def runner(nodes: Nodes, approver: Approver, audit: Path) -> ActionRunner:
    restart = Action(
        "restart_node",
        "start one node again",
        Risk.HIGH,
        (Param("node", str, choices=NODES),),
        nodes.restart,
        remedies=frozenset({FaultKind.CRASH, FaultKind.PAUSE}),
        target="node",
        timeout=30.0,
    )
    r = ActionRunner({restart.name: restart}, approver=approver)
    r.audit_to(audit)
    return r


def crash_case(r: ActionRunner) -> Case:
    """A recorded case (node-1 killed), with the runner's own catalogue."""
    case = case_from_json(CRASH_CASE.read_text())
    return replace(case, actions=tuple(action_info(a) for a in r.catalogue.values()))


class Api:
    """Answers with one recorded response and keeps the request body."""

    def __init__(self, response: str) -> None:
        self.response = json.loads((RESPONSES / response).read_text())
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.method == "POST" and request.url.path == "/v1/messages"
        self.requests.append(json.loads(request.content))
        return httpx2.Response(200, json=self.response)


async def diagnose(transport: httpx2.AsyncBaseTransport, case: Case) -> Diagnosis:
    client = anthropic.AsyncAnthropic(
        api_key="test", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )
    engine = ClaudeEngine(MODEL, client=client, timeout=60.0)
    try:
        return await engine.diagnose(case)
    finally:
        await engine.aclose()


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Running (not a zombie) according to /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_request_offers_the_catalogue_with_what_each_action_remedies(
    nodes: Nodes, tmp_path: Path
) -> None:
    r = runner(nodes, Approver(), tmp_path / "audit.jsonl")
    api = Api("crash_node-1.json")
    await diagnose(httpx2.MockTransport(api), crash_case(r))
    [body] = api.requests
    user = body["messages"][0]["content"]
    data = json.loads(user[user.index(FENCE_OPEN) + len(FENCE_OPEN) : user.index(FENCE_CLOSE)])
    assert data["actions"] == [
        {
            "name": "restart_node",
            "description": "start one node again",
            "risk": "high",
            "params": {"node": list(NODES)},
            "required": ["node"],
            "remedies": ["crash", "pause"],
            "target": "node",
        }
    ]
    [shape] = body["tools"][0]["input_schema"]["properties"]["recommendations"]["items"]["anyOf"]
    assert shape["properties"]["action"]["enum"] == ["restart_node"]
    assert shape["properties"]["args"]["items"]["properties"]["value"]["enum"] == list(NODES)
    assert nodes.started == []  # diagnosing runs nothing


async def test_a_proposal_from_the_catalogue_is_run(nodes: Nodes, tmp_path: Path) -> None:
    approver = Approver()
    r = runner(nodes, approver, tmp_path / "audit.jsonl")
    d = await diagnose(httpx2.MockTransport(Api("crash_node-1.json")), crash_case(r))
    assert not [n for n in d.notes if "outside the catalogue" in n or n.startswith("dropped")]

    done = await remediate(d, r)

    assert done.ok and done.cause == "crash(node-1)"
    [step] = done.steps
    assert (step.action, step.args, step.outcome, step.attempts) == (
        "restart_node",
        (("node", "node-1"),),
        "ok",
        1,
    )
    [(node, proc)] = nodes.started
    assert node == "node-1" and alive(proc.pid)
    assert step.detail == f"node-1 started as pid {proc.pid}"
    assert approver.asked == ["restart_node"]
    [line] = audit_lines(tmp_path / "audit.jsonl")
    assert {
        k: line[k] for k in ("action", "args", "risk", "decision", "outcome", "approved_by")
    } == {
        "action": "restart_node",
        "args": {"node": "node-1"},
        "risk": "high",
        "decision": "approved",
        "outcome": "ok",
        "approved_by": "test approver",
    }


FORBIDDEN = [
    pytest.param(
        "forbidden_action.json",
        ("drop_database", ()),
        {"action": "drop_database", "args": {}, "risk": None},
        "unknown action 'drop_database'; actions: restart_node",
        "recommendation drop_database() is outside the catalogue (no action 'drop_database';"
        " actions: restart_node): kept for the runner to refuse and audit, never run",
        id="action outside the catalogue",
    ),
    pytest.param(
        "argument_outside_catalogue.json",
        ("restart_node", (("node", "node-9"),)),
        {"action": "restart_node", "args": {"node": "node-9"}, "risk": "high"},
        "node=node-9: invalid value; valid values: node-1, node-2, node-3",
        "recommendation restart_node(node=node-9) is outside the catalogue (node='node-9' is"
        " not one of node-1, node-2, node-3): kept for the runner to refuse and audit, never run",
        id="argument outside the allowed values",
    ),
]


@pytest.mark.parametrize(("response", "proposed", "entry", "why", "note"), FORBIDDEN)
async def test_a_proposal_outside_the_catalogue_is_refused_audited_and_never_run(
    nodes: Nodes,
    tmp_path: Path,
    response: str,
    proposed: tuple[str, tuple[tuple[str, str], ...]],
    entry: dict[str, Any],
    why: str,
    note: str,
) -> None:
    approver = Approver()
    r = runner(nodes, approver, tmp_path / "audit.jsonl")
    d = await diagnose(httpx2.MockTransport(Api(response)), crash_case(r))
    # the engine keeps the proposal, in its place, and says it is outside the catalogue
    assert (d.recommendations[0].action, d.recommendations[0].args) == proposed
    assert note in d.notes

    done = await remediate(d, r)

    assert nodes.started == []  # nothing ran: no process was started
    assert approver.asked == []  # nor was anybody asked to approve it
    [step] = done.steps  # the workflow stopped at the refusal (forbidden_action.json
    # proposes restart_node(node-1) next: it was not run either)
    assert (step.action, step.outcome, step.attempts, step.detail) == (
        proposed[0],
        "refused",
        0,
        why,
    )
    assert not done.ok
    [audited] = r.audit
    assert (audited.outcome, audited.decision, audited.attempts) == ("refused", Decision.INVALID, 0)
    [line] = audit_lines(tmp_path / "audit.jsonl")
    assert {k: line[k] for k in entry} == entry
    assert (line["decision"], line["outcome"], line["detail"], line["approved_by"]) == (
        "invalid",
        "refused",
        why,
        None,
    )
    with pytest.raises(NotRecovered, match="nothing was remedied"):
        await wait_recovered(done, _unobserved, (), within=1.0, sustain=0.1, interval=0.1)


async def _unobserved() -> Observation:
    raise AssertionError("a remediation that ran nothing is never observed for recovery")


async def test_a_recorded_forbidden_proposal_replays_without_a_key_and_is_still_refused(
    nodes: Nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cassette path: recorded once (here from the hand-written response), replayed
    with no key and no network, refused the same way."""
    approver = Approver()
    r = runner(nodes, approver, tmp_path / "audit.jsonl")
    case = crash_case(r)
    path = tmp_path / "claude.json"
    recorder = Cassette(path, "record")
    api = Api("forbidden_action.json")
    await diagnose(recorder.transport(httpx2.MockTransport(api)), case)
    assert len(recorder) == 1 and len(api.requests) == 1

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    engine = ClaudeEngine(MODEL, cassette=Cassette(path, "replay"))
    try:
        d = await engine.diagnose(case)
    finally:
        await engine.aclose()
    assert len(api.requests) == 1  # the replay sent nothing
    assert [r.action for r in d.recommendations] == ["drop_database", "restart_node"]

    done = await remediate(d, r)
    assert [(s.action, s.outcome) for s in done.steps] == [("drop_database", "refused")]
    assert nodes.started == [] and approver.asked == []
    assert [(e.action, e.decision) for e in r.audit] == [("drop_database", Decision.INVALID)]
