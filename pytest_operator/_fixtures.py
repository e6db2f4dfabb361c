"""The plugin's fixtures: cluster (shared per session), subject, chaos, workload, operator.

One cluster runs at a time and is shared by every scenario that wants the same
subject configuration; between scenarios it is reset (toxics removed, processes
resumed or restarted, clocks zeroed) and the subject's own state is reset, so every
scenario starts healthy and the order does not matter. A scenario that wants
another configuration (``@pytest.mark.subject(name, **options)``) gets a cluster
started for it. Heavy modules load only when a fixture is first used.

Each fixture builds its piece with :mod:`pytest_operator._run`, as ``operator demo`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from pytest_operator import _registry
from pytest_operator._diagnosis import DiagnosisEngine
from pytest_operator._operator import InjectionLog, Operator
from pytest_operator._options import OperatorOptions
from pytest_operator._run import (
    ClusterPool,
    RecordingChaos,
    build_engines,
    close_engines,
    new_chaos,
    new_operator,
    new_workload,
    open_session,
)
from pytest_operator._subject import Subject, SubjectConfig, SubjectSession

if TYPE_CHECKING:
    from pytest_operator._backend import Cluster
    from pytest_operator._chaos import Fault, Injection
    from pytest_operator._history import History
    from pytest_operator._process import ProcessHandle
    from pytest_operator._workload import Workload

OPERATOR = pytest.StashKey[Operator]()


def _options(config: pytest.Config) -> OperatorOptions:
    from pytest_operator.plugin import OPTIONS

    return config.stash[OPTIONS]


@pytest.fixture(scope="session")
def operator_options(pytestconfig: pytest.Config) -> OperatorOptions:
    return _options(pytestconfig)


@pytest.fixture(scope="session")
def operator_subject(operator_options: OperatorOptions) -> Subject:
    if operator_options.subject is None:
        installed = ", ".join(sorted(_registry.installed())) or "none"
        raise pytest.UsageError(
            "no subject selected: pass --subject NAME or mark the scenario with"
            f" @pytest.mark.subject(NAME) (installed subjects: {installed})"
        )
    return _registry.load(operator_options.subject)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def operator_clusters(
    operator_subject: Subject, operator_options: OperatorOptions
) -> AsyncIterator[ClusterPool]:
    pool = ClusterPool(operator_subject, operator_options.backend)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def subject_config(
    request: pytest.FixtureRequest, operator_subject: Subject, operator_options: OperatorOptions
) -> SubjectConfig:
    marker = request.node.get_closest_marker("subject")
    options = dict(marker.kwargs) if marker is not None else {}
    try:
        return operator_subject.configure(operator_options.nodes, options)
    except ValueError as exc:
        raise pytest.UsageError(f"{request.node.nodeid}: {exc}") from None


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(
    operator_clusters: ClusterPool, subject_config: SubjectConfig
) -> Cluster[ProcessHandle]:
    return await operator_clusters.get(subject_config)


@pytest.fixture
def history() -> History:
    from pytest_operator._history import History

    return History()


@pytest_asyncio.fixture(loop_scope="session")
async def subject(
    operator_subject: Subject,
    cluster: Cluster[ProcessHandle],
    subject_config: SubjectConfig,
    history: History,
) -> AsyncIterator[SubjectSession]:
    async with open_session(operator_subject, cluster, subject_config, history) as session:
        yield session


@pytest.fixture
def injections() -> InjectionLog:
    return InjectionLog()


@pytest_asyncio.fixture(loop_scope="session")
async def chaos(
    request: pytest.FixtureRequest, cluster: Cluster[ProcessHandle], injections: InjectionLog
) -> AsyncIterator[RecordingChaos]:
    """The imperative chaos facade. In a test that uses the subject, selectors such as
    ``leader()`` resolve from the subject session's observation."""
    observe = None
    if "subject" in request.fixturenames:
        session: SubjectSession = request.getfixturevalue("subject")
        observe = session.observe
    recording = new_chaos(cluster, injections, observe)
    try:
        yield recording
    finally:
        await recording.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def workload(subject: SubjectSession, history: History) -> AsyncIterator[Workload]:
    wl = new_workload(subject, history)
    try:
        yield wl
    finally:
        await wl.aclose()


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    subject: SubjectSession,
    history: History,
    injections: InjectionLog,
    operator_options: OperatorOptions,
    operator_engines: list[DiagnosisEngine],
) -> Operator:
    op = new_operator(subject, history, injections, operator_options, operator_engines)
    request.node.stash[OPERATOR] = op
    return op


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def operator_engines(
    pytestconfig: pytest.Config, operator_options: OperatorOptions
) -> AsyncIterator[list[DiagnosisEngine]]:
    from pytest_operator.plugin import ENGINES

    engines = pytestconfig.stash[ENGINES]
    try:
        yield engines
    finally:
        await close_engines(engines)


def _marked_faults(item: pytest.Item) -> list[Fault]:
    from pytest_operator._chaos import Fault

    faults: list[Fault] = []
    for marker in item.iter_markers("chaos"):
        for f in marker.args:
            if not isinstance(f, Fault):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.chaos takes faults such as"
                    f" partition('node-2', 'redis'); got {f!r}"
                )
            faults.append(f)
    return faults


@pytest_asyncio.fixture(loop_scope="session")
async def operator_marked_chaos(
    request: pytest.FixtureRequest, subject: SubjectSession, chaos: RecordingChaos
) -> AsyncIterator[list[Injection]]:
    """The faults of ``@pytest.mark.chaos(...)``, injected after the reset, healed after."""
    injected: list[Injection] = []
    async with contextlib.AsyncExitStack() as stack:
        for fault in _marked_faults(request.node):
            injected.append(await stack.enter_async_context(chaos.inject(fault)))
        yield injected


@pytest.fixture(autouse=True)
def _operator_chaos_marker(request: pytest.FixtureRequest) -> None:
    """A test marked ``chaos`` gets its faults for its whole duration."""
    if _marked_faults(request.node):
        request.getfixturevalue("operator_marked_chaos")


__all__ = [
    "OPERATOR",
    "ClusterPool",
    "RecordingChaos",
    "build_engines",
]
